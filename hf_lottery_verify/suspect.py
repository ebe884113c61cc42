"""Reading a suspect without trusting it: any model source → raw tensors under timm's names.

A *suspect* is a model someone else published: a Hub repo, a folder, a file, a state dict
or a model object. Everything it says about itself is attacker-controlled — stored
masks, layout flags, checksums, header metadata, claims — so :func:`read_suspect` uses
none of it as evidence:

* only tensors are read, from safetensors files (pickle-only sources are refused, never
  unpickled); header metadata is parsed only to *report* a public claim, and a header
  that is malformed, of an unknown version or with a stale checksum changes nothing;
* when ``safetensors`` itself refuses a file because of its metadata (a non-string
  value, say), a tolerant reader that ignores the metadata block reads the tensors;
* masks files and mask tensors (``masks.safetensors``, v1 ``masks.*`` entries) are
  dropped: the verifier recovers masks from the weights;
* the compact layout is decoded from its tensors and the dense shapes alone (kept count
  and code width are derived, not read from the header);
* every known naming layout — this library's, plain timm, transformers ``TimmWrapper``
  (``timm_model.``), ``module.`` / ``_orig_mod.`` prefixes — maps to timm's canonical names.

:func:`resolve_source` (local path or Hub repo id → local folder plus where it came from)
is shared with :func:`hf_lottery_verify.loading.load_model`.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .errors import CheckpointError, CheckpointNotFoundError, CorruptCheckpointError, PickleRefusedError
from .hub import HubLocation, download_model_folder, looks_like_repo_id
from .storage import (
    CONFIG_NAME,
    METADATA_KEY,
    PICKLE_SUFFIXES,
    canonicalize_state_dict,
    decode_compact,
    find_weight_files,
    strip_foreign_entries,
)

__all__ = ["Suspect", "read_suspect", "resolve_source", "read_tensors_untrusted"]

logger = logging.getLogger(__name__)

_DTYPES: dict[str, tuple[Any, torch.dtype]] = {
    "F64": (np.float64, torch.float64), "F32": (np.float32, torch.float32), "F16": (np.float16, torch.float16),
    "BF16": (np.uint16, torch.bfloat16), "I64": (np.int64, torch.int64), "I32": (np.int32, torch.int32),
    "I16": (np.int16, torch.int16), "I8": (np.int8, torch.int8), "U8": (np.uint8, torch.uint8),
    "BOOL": (np.bool_, torch.bool),
}


@dataclass
class Suspect:
    """A suspect's tensors and what was read to get them.

    Attributes:
        state_dict: CPU tensors by timm's canonical names (weights and BatchNorm buffers).
        kind: ``"model"``, ``"state_dict"``, ``"file"``, ``"folder"`` or ``"hub"``.
        layout: What the naming looked like: ``"hf_lottery_verify"``, ``"compact"``, ``"timm"``,
            ``"timm_wrapper"`` or ``"state_dict"`` (informative only).
        source: The source as given, as text.
        config: The suspect's ``config.json`` (untrusted; hints only), if any.
        claim: The public ownership claim found in the header (untrusted; reported, never evidence).
        repo_id: Hub repo, for Hub sources.
        revision: Revision asked for.
        commit_sha: Commit the files were read at.
        files_read: Files whose bytes were read.
        notes: What was ignored on the way (edited headers, masks files, ...).
        seconds: Time spent reading.
    """

    state_dict: dict[str, torch.Tensor]
    kind: str
    layout: str
    source: str
    config: dict[str, Any] | None = None
    claim: dict[str, Any] | None = None
    repo_id: str | None = None
    revision: str | None = None
    commit_sha: str | None = None
    files_read: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def arch_hint(self) -> str | None:
        """The architecture the suspect's config names (``arch`` or timm's ``architecture``), if any."""
        cfg = self.config or {}
        arch = cfg.get("arch") or cfg.get("architecture")
        return str(arch).split(".")[0] if isinstance(arch, str) else None


def resolve_source(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> tuple[Path, HubLocation | None]:
    """A local path for ``source``: the path itself, or the downloaded snapshot of a Hub repo.

    Args:
        source (`str` or `os.PathLike`): Folder, file or Hub repo id.
        revision (`str`, *optional*): Hub branch, tag or commit.
        token (`str` or `bool`, *optional*): Hub token.
        cache_dir (`str` or `os.PathLike`, *optional*): Hub cache folder.
        local_files_only (`bool`, *optional*, defaults to `False`): Use the Hub cache only.
        force_download (`bool`, *optional*, defaults to `False`): Download again even when cached.

    Returns:
        ``(local_path, hub_location)``; ``hub_location`` is ``None`` for local paths.

    Raises:
        CheckpointNotFoundError: ``source`` is neither an existing path nor a repo id (also a
            ``FileNotFoundError``).
        HubError, PickleRefusedError: From the download (see
            :func:`hf_lottery_verify.hub.download_model_folder`).
    """
    local = Path(source).expanduser()
    if local.exists():
        if revision is not None:
            logger.warning("revision=%r is ignored for the local path %s.", revision, local)
        return local, None
    if not looks_like_repo_id(str(source)):
        raise CheckpointNotFoundError(
            f"No such file or folder: {source} (and it is not a Hub repo id). Check the path, or pass a Hub repo "
            "id as 'owner/name'.", path=str(source))
    location = download_model_folder(str(source), revision=revision, token=token, cache_dir=cache_dir,
                                     local_files_only=local_files_only, force_download=force_download)
    return location.folder, location


# --------------------------------------------------------------------------- tolerant file reading


def read_tensors_untrusted(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[str]]:
    """Read a safetensors file's tensors without relying on its metadata.

    ``safetensors`` is tried first; if it refuses the file, the header is parsed here,
    ignoring ``__metadata__`` entirely, and every tensor is checked against the file size
    before it is read.

    Args:
        path (`str` or `os.PathLike`): The file.

    Returns:
        ``(tensors, raw_metadata, notes)`` — the metadata as found (possibly not str→str),
        for reporting only.

    Raises:
        CorruptCheckpointError: The file is truncated or its tensor table is unreadable.
    """
    path = str(path)
    try:
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {}), []
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        first_error = exc
    try:
        tensors, meta = _read_tolerant(path)
    except CorruptCheckpointError:
        raise CorruptCheckpointError(
            f"Cannot read safetensors file {path}: {first_error}. The file is truncated or corrupt; its weights "
            "cannot be verified.", path=path) from first_error
    return tensors, meta, [f"{Path(path).name}: safetensors refused the header ({first_error}); read the tensor "
                           "table directly, ignoring its metadata"]


def _read_tolerant(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CorruptCheckpointError(f"{path} is too short to be a safetensors file.", path=path)
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or 8 + n > size:
            raise CorruptCheckpointError(f"{path}: header length {n} does not fit the file.", path=path)
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptCheckpointError(f"{path}: tensor table is not JSON ({exc}).", path=path) from exc
        if not isinstance(header, dict):
            raise CorruptCheckpointError(f"{path}: tensor table is not a JSON object.", path=path)
        meta = header.pop("__metadata__", None)
        data_size = size - 8 - n
        tensors: dict[str, torch.Tensor] = {}
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            for name, entry in header.items():
                try:
                    np_dtype, dtype = _DTYPES[entry["dtype"]]
                    shape = [int(s) for s in entry["shape"]]
                    begin, end = (int(o) for o in entry["data_offsets"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise CorruptCheckpointError(f"{path}: bad entry for '{name}' ({exc}).", path=path) from exc
                count = int(np.prod(shape)) if shape else 1
                if not 0 <= begin <= end <= data_size or end - begin != count * np.dtype(np_dtype).itemsize:
                    raise CorruptCheckpointError(f"{path}: '{name}' lies outside the file (truncated?).", path=path)
                raw = np.frombuffer(mm, dtype=np_dtype, count=count, offset=8 + n + begin).copy()
                t = torch.from_numpy(raw)
                tensors[name] = (t.view(dtype) if dtype == torch.bfloat16 else t).reshape(shape)
    return tensors, meta if isinstance(meta, dict) else {}


def _claim_from(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """The public claim in a header, if it parses; anything odd is simply no claim."""
    try:
        ours = json.loads(raw[METADATA_KEY]) if isinstance(raw.get(METADATA_KEY), str) else None
        claim = ours.get("ownership") if isinstance(ours, dict) else None
        return dict(claim) if isinstance(claim, dict) else None
    except (json.JSONDecodeError, TypeError, ValueError):
        return None


def _header_shapes(raw: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    try:
        ours = json.loads(raw[METADATA_KEY])
        return {n: tuple(int(s) for s in e["shape"]) for n, e in ours.get("masks", {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        return {}


def _read_config_untrusted(folder: Path, notes: list[str]) -> dict[str, Any] | None:
    cfg = folder / CONFIG_NAME
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        notes.append(f"{CONFIG_NAME} is not valid JSON ({exc}); ignored")
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- the resolver


def read_suspect(
    source: Any,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> Suspect:
    """Read a suspect's tensors, trusting nothing it says about itself.

    Args:
        source: A model (this library's, a timm ResNet, a transformers ``TimmWrapper``), a
            state dict, a ``.safetensors`` file, a folder, or a Hub repo id.
        revision (`str`, *optional*): Hub branch, tag or commit (Hub sources only).
        token (`str` or `bool`, *optional*): Hub token.
        cache_dir (`str` or `os.PathLike`, *optional*): Hub cache folder.
        local_files_only (`bool`, *optional*, defaults to `False`): Use the Hub cache only
            (also when ``HF_HUB_OFFLINE=1``).
        shapes (`Mapping[str, tuple[int, ...]]`, *optional*): Dense shapes of the reference
            model (from the owner's key), used to decode a compact-layout suspect when its
            header's shapes do not fit.

    Returns:
        The :class:`Suspect`.

    Raises:
        PickleRefusedError: Only pickle weights are available.
        CorruptCheckpointError: A weights file is truncated or unreadable.
        CheckpointError: No weights, or a path that does not exist.
        HubError: The repo or revision cannot be fetched.
    """
    t0 = time.perf_counter()
    if isinstance(source, nn.Module):
        net = getattr(source, "timm_model", source)
        sd = {k: v.detach().cpu().clone() for k, v in canonicalize_state_dict(net.state_dict()).items()}
        claim = getattr(source, "ownership_claim", None)
        config = getattr(source, "config", None)
        hints = config.to_dict() if hasattr(config, "to_dict") else None  # untrusted: how to query it, never evidence
        return Suspect(state_dict=sd, kind="model", layout="model", source=type(source).__name__, config=hints,
                       claim=dict(claim) if isinstance(claim, dict) else None, seconds=time.perf_counter() - t0)
    if isinstance(source, Mapping):
        bad = [k for k, v in source.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise CheckpointError(f"State dict entries are not tensors: {bad[:5]}.")
        layout = "timm_wrapper" if any(str(k).startswith("timm_model.") for k in source) else "state_dict"
        sd = {k: v.detach().cpu() for k, v in canonicalize_state_dict(source).items()}
        sd, _ = strip_foreign_entries(sd)
        return Suspect(state_dict=sd, kind="state_dict", layout=layout, source="state dict",
                       seconds=time.perf_counter() - t0)
    local, location = resolve_source(source, revision=revision, token=token, cache_dir=cache_dir,
                                     local_files_only=local_files_only)
    notes: list[str] = []
    if local.is_file():
        if local.suffix in PICKLE_SUFFIXES:
            raise PickleRefusedError(f"{local} is a pickle file; hf_lottery_verify never unpickles. Ask for "
                                     "safetensors weights.", path=str(local))
        files, folder = [local], local.parent
    else:
        files, folder = find_weight_files(local), local
    config = _read_config_untrusted(folder, notes)
    if location is not None and location.from_cache:
        notes.append(f"read from the local Hub cache at commit {location.commit_sha} (offline or server unreachable)")
    tensors: dict[str, torch.Tensor] = {}
    claim, header_shapes = None, {}
    for f in files:
        t, raw, file_notes = read_tensors_untrusted(f)
        notes.extend(file_notes)
        tensors.update(t)
        claim = claim or _claim_from(raw)
        header_shapes.update(_header_shapes(raw))
    layout = "timm"
    if any(k.startswith("compact.values.") for k in tensors):
        layout = "compact"
        tensors = _decode_compact_untrusted(tensors, header_shapes, shapes, notes, str(files[0]))
    tensors, dropped = strip_foreign_entries(tensors)
    if dropped:
        notes.append(f"ignored {len(dropped)} stored mask tensor(s) in the weights file (masks come from the weights)")
        layout = "hf_lottery_verify"
    if (folder / "masks.safetensors").is_file():
        notes.append("ignored masks.safetensors (masks come from the weights)")
        layout = "hf_lottery_verify"
    if any(k.startswith("timm_model.") for k in tensors) or (config or {}).get("model_type") == "timm_wrapper":
        layout = "timm_wrapper"
    elif (config or {}).get("model_type") == "sparse_resnet" and layout == "timm":
        layout = "hf_lottery_verify"
    sd = canonicalize_state_dict(tensors)
    return Suspect(
        state_dict=sd, kind="hub" if location else ("file" if local.is_file() else "folder"), layout=layout,
        source=str(source), config=config, claim=claim,
        repo_id=location.repo_id if location else None, revision=location.revision if location else None,
        commit_sha=location.commit_sha if location else None, files_read=[str(f) for f in files], notes=notes,
        seconds=time.perf_counter() - t0)


def _decode_compact_untrusted(tensors: dict[str, torch.Tensor], header_shapes: Mapping[str, tuple[int, ...]],
                              reference: Mapping[str, tuple[int, ...]] | None, notes: list[str], where: str
                              ) -> dict[str, torch.Tensor]:
    """Decode with the header's shapes; where they fail, with the reference shapes from the key."""
    names = [k[len("compact.values."):] for k in tensors if k.startswith("compact.values.")]
    shapes: dict[str, tuple[int, ...]] = {}
    for name in names:
        candidates = [s for s in (header_shapes.get(name), (reference or {}).get(name)) if s]
        if not candidates:
            raise CorruptCheckpointError(f"{where}: no shape for the compact tensor '{name}'; pass the owner's key "
                                         "so its reference shapes can be used.", path=where)
        for shape in candidates:
            try:
                own = {p + name: tensors[p + name] for p in ("compact.values.", "compact.low.", "compact.high.")
                       if p + name in tensors}
                decode_compact(own, shapes={name: shape})
            except CorruptCheckpointError:
                continue
            shapes[name] = tuple(shape)
            if shape != candidates[0]:
                notes.append(f"the header's shape of '{name}' does not decode; used the key's reference shape")
            break
        else:
            raise CorruptCheckpointError(f"{where}: the compact code of '{name}' fits no known shape.", path=where)
    dense, _ = decode_compact(tensors, shapes=shapes, path=where)
    return dense
