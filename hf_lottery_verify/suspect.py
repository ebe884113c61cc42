"""Reading a suspect without trusting it: any model source → raw tensors under timm's names.

A *suspect* is a model someone else published: a Hub repo, a folder, a file, a state dict
or a model object. Everything it says about itself is attacker-controlled — stored
masks, layout flags, checksums, header metadata, claims — so :func:`read_suspect` uses
none of it as evidence:

* only tensors are read, from safetensors files checked as strictly as ``safetensors``
  itself checks them (:func:`hf_lottery_verify.storage.read_safetensors`; pickle-only
  sources are refused, never unpickled); header metadata is parsed only to *report* a
  public claim, and a header that is malformed, of an unknown version or with a stale
  checksum changes nothing — a ``__metadata__`` block that ``safetensors`` refuses (a
  non-string value, say) is ignored with a note, and the tensors are read;
* ``config.json`` is a hint only (how to query the model): read by an allow-list of
  checked fields, a bad field or file is dropped with a note;
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

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, CheckpointNotFoundError, CorruptCheckpointError
from .hub import HubLocation, download_model_folder, looks_like_repo_id
from .storage import (
    VALUES_PREFIX,
    canonicalize_state_dict,
    decode_compact,
    find_weight_files,
    parse_metadata,
    read_checkpoint,
    read_config,
    read_safetensors,
    strip_foreign_entries,
)

__all__ = ["Suspect", "read_suspect", "resolve_source"]

logger = logging.getLogger(__name__)


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
    if os.path.lexists(local):  # a dangling or looping link too: the reader says what is wrong with it
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


# --------------------------------------------------------------------------- header metadata (never evidence)


def _ours(raw: Mapping[str, str]) -> dict[str, Any]:
    """This library's header entry when it is well-formed (mask shapes checked); anything odd is simply nothing."""
    try:
        return parse_metadata(raw)
    except CheckpointError:
        return {}


def _claim_from(ours: Mapping[str, Any]) -> dict[str, Any] | None:
    """The public claim, its flat fields only (strings, numbers, lists of strings): it is reported, never used."""
    claim = ours.get("ownership")
    return {k: v for k, v in claim.items() if isinstance(v, (str, int, float, bool, type(None))) or (
        isinstance(v, list) and all(isinstance(x, str) for x in v))} if isinstance(claim, dict) else None


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
        contents = read_checkpoint(source)  # entries must be tensors; names mapped to timm's
        sd, _ = strip_foreign_entries({k: v.detach().cpu() for k, v in contents.state_dict.items()})
        return Suspect(state_dict=sd, kind="state_dict", layout=contents.layout, source="state dict",
                       seconds=time.perf_counter() - t0)
    local, location = resolve_source(source, revision=revision, token=token, cache_dir=cache_dir,
                                     local_files_only=local_files_only)
    notes: list[str] = []
    files, folder = find_weight_files(local), (local if local.is_dir() else local.parent)
    config = read_config(folder, notes=notes)
    if location is not None and location.from_cache:
        notes.append(f"read from the local Hub cache at commit {location.commit_sha} (offline or server unreachable)")
    tensors: dict[str, torch.Tensor] = {}
    claim, header_shapes = None, {}
    for f in files:
        t, raw = read_safetensors(f, notes=notes)
        tensors.update(t)
        ours = _ours(raw)
        claim = claim or _claim_from(ours)
        header_shapes.update({n: tuple(e["shape"]) for n, e in ours.get("masks", {}).items()})
    layout = "timm"
    if any(k.startswith(VALUES_PREFIX) for k in tensors):
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
        state_dict=sd, kind="hub" if location else ("folder" if local.is_dir() else "file"), layout=layout,
        source=str(source), config=config, claim=claim,
        repo_id=location.repo_id if location else None, revision=location.revision if location else None,
        commit_sha=location.commit_sha if location else None, files_read=[str(f) for f in files], notes=notes,
        seconds=time.perf_counter() - t0)


def _decode_compact_untrusted(tensors: dict[str, torch.Tensor], header_shapes: Mapping[str, tuple[int, ...]],
                              reference: Mapping[str, tuple[int, ...]] | None, notes: list[str], where: str
                              ) -> dict[str, torch.Tensor]:
    """Decode with the header's shapes; when they fail, with the reference shapes from the key."""
    for shapes in (header_shapes, reference or {}):
        try:
            dense, _ = decode_compact(tensors, shapes=shapes, path=where)
        except CorruptCheckpointError as exc:
            error = exc
            continue
        if shapes is not header_shapes:
            notes.append("the header's shapes do not decode the compact layout; used the key's reference shapes")
        return dense
    raise CorruptCheckpointError(f"{where}: the compact layout decodes with neither its header's shapes nor the "
                                 f"key's reference shapes ({error})", path=where)
