"""The safetensors layout of a sparse ticket, and reading any ResNet checkpoint layout.

``model.safetensors`` written by this library (``layout="dense"``, the default):

* every tensor of the timm model's ``state_dict`` under timm's own name
  (``layer1.0.conv1.weight``), dense, zeros where pruned — plain timm and transformers
  users can load it;
* one bit-packed ``U8`` tensor per mask, named ``masks.<parameter name>``
  (:func:`~hf_lottery_verify.masks.pack_bits`, most significant bit first);
* header metadata ``{"format": "pt", "hf_lottery_verify": "<json>"}`` where the JSON holds
  ``format_version``, ``layout``, ``bit_order``, per-mask ``shape`` and ``kept`` counts,
  the architecture, and a ``sha256`` of all tensor bytes (corruption is detected, not
  only truncation).

``layout="compact"`` (for extreme tickets) stores, for each masked parameter, only the
kept values (``compact.values.<name>``, same dtype, bit-exact) and an Elias–Fano code of
their positions (``compact.low.<name>``, ``compact.high.<name>``); other tensors are
stored as in the dense layout. A 2%-dense CIFAR ResNet-18 drops from 44.7 MB to ~1.2 MB.

Reading accepts this library's folders and files, plain timm folders (``config.json``
with ``architecture``), transformers ``TimmWrapper`` checkpoints (``timm_model.``
prefix) and bare state dicts, and maps names to timm's canonical ones. Only safetensors
is ever read: a folder holding only pickle files raises
:class:`~hf_lottery_verify.errors.PickleRefusedError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .codecs import decode_positions, encode_positions, pack_bits, unpack_bits
from .errors import CheckpointError, CorruptCheckpointError, MaskInconsistencyError, PickleRefusedError
from .masks import MaskDict

__all__ = [
    "WEIGHTS_NAME",
    "WEIGHTS_INDEX_NAME",
    "CONFIG_NAME",
    "METADATA_KEY",
    "FORMAT_VERSION",
    "CheckpointContents",
    "write_checkpoint",
    "read_checkpoint",
    "read_safetensors",
    "read_header_metadata",
    "canonicalize_state_dict",
    "find_weight_files",
]

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
METADATA_KEY = "hf_lottery_verify"
FORMAT_VERSION = 1
MASK_PREFIX = "masks."
VALUES_PREFIX = "compact.values."
LOW_PREFIX = "compact.low."
HIGH_PREFIX = "compact.high."
LAYOUTS = ("dense", "compact")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Prefixes other libraries put in front of timm's names: transformers' TimmWrapper,
# DistributedDataParallel, torch.compile.
_FOREIGN_PREFIXES = ("timm_model.", "module.", "_orig_mod.")


@dataclass
class CheckpointContents:
    """What a checkpoint holds, in canonical timm names.

    Attributes:
        state_dict: Dense tensors by timm name (zeros where pruned).
        masks: Masks stored by this library, or ``None`` for foreign layouts.
        metadata: This library's header metadata (empty for foreign layouts).
        config: ``config.json`` of the folder, if there is one.
        layout: ``"dense"``, ``"compact"``, ``"timm"``, ``"timm_wrapper"`` or ``"state_dict"``.
        path: The file or folder read, if any.
    """

    state_dict: dict[str, torch.Tensor]
    masks: MaskDict | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    layout: str = "state_dict"
    path: str | None = None


# --------------------------------------------------------------------------- writing


def _tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(json.dumps(list(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_checkpoint(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    compact: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> int:
    """Write weights and masks to one safetensors file, atomically.

    The file is written next to its destination and renamed into place, so an
    interrupted save never leaves a truncated checkpoint behind.

    Args:
        path: Destination file.
        state_dict: Tensors by timm name.
        masks: Boolean masks by parameter name (must be a subset of ``state_dict``).
        compact: Store only kept values plus an Elias–Fano position code for masked
            parameters (bit-exact, far smaller for extreme tickets).
        metadata: Extra JSON-serialisable entries for this library's header metadata
            (``arch``, public claims, ...).

    Returns:
        Size of the written file in bytes.

    Raises:
        CheckpointError: A mask names a tensor that is not in ``state_dict`` or differs in shape.
    """
    masks = dict(masks or {})
    tensors: dict[str, torch.Tensor] = {}
    mask_info: dict[str, dict[str, Any]] = {}
    for name, tensor in state_dict.items():
        t = tensor.detach().contiguous().cpu()
        if name not in masks:
            tensors[name] = t
            continue
        mask = masks[name].detach().cpu()
        if mask.shape != t.shape:
            raise CheckpointError(f"Mask for '{name}' has shape {tuple(mask.shape)}, the weight {tuple(t.shape)}.")
        info: dict[str, Any] = {"shape": list(t.shape), "kept": int(mask.sum())}
        if compact:
            low, high, low_bits = encode_positions(mask)
            tensors[VALUES_PREFIX + name] = t[mask].contiguous()
            tensors[LOW_PREFIX + name] = low
            tensors[HIGH_PREFIX + name] = high
            info["low_bits"] = low_bits
        else:
            tensors[name] = t
            tensors[MASK_PREFIX + name] = pack_bits(mask)
        mask_info[name] = info
    unknown = set(masks) - set(state_dict)
    if unknown:
        raise CheckpointError(f"Masks for tensors that are not in the state dict: {sorted(unknown)[:5]}.")
    ours = {
        **dict(metadata or {}),
        "format_version": FORMAT_VERSION,
        "layout": "compact" if compact else "dense",
        "bit_order": "big",
        "masks": mask_info,
        "sha256": _tensor_digest(tensors),
    }
    header = {"format": "pt", METADATA_KEY: json.dumps(ours, sort_keys=True)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a published file must be readable
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path.stat().st_size


# --------------------------------------------------------------------------- reading files


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor and the raw header metadata of a safetensors file.

    Args:
        path: The file.

    Returns:
        ``(tensors, metadata)``; metadata is ``{}`` when the header has none.

    Raises:
        CorruptCheckpointError: The file is truncated, its header is malformed, or a
            tensor cannot be read.
        CheckpointError: The file does not exist.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"No such checkpoint file: {path}", path=path)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise CorruptCheckpointError(
            f"Cannot read safetensors file {path}: {exc}. The file is truncated or corrupt; "
            "download or save it again.",
            path=path,
        ) from exc
    return tensors, metadata


def read_header_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """This library's header metadata of a safetensors file, without reading tensors.

    Args:
        path: The file.

    Returns:
        The parsed ``hf_lottery_verify`` entry, or ``{}`` for files written by others.

    Raises:
        CorruptCheckpointError: The header cannot be parsed.
    """
    path = str(path)
    try:
        with safe_open(path, framework="pt") as f:
            raw = dict(f.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise CorruptCheckpointError(f"Cannot read the header of {path}: {exc}.", path=path) from exc
    return _parse_our_metadata(raw, path)


def _parse_our_metadata(raw: Mapping[str, str], path: str | None, *, lenient: bool = False) -> dict[str, Any]:
    if METADATA_KEY not in raw:
        return {}
    if lenient:  # a suspect's header is attacker-controlled: fall back to reading it as foreign
        try:
            return _parse_our_metadata(raw, path)
        except CheckpointError as exc:
            logger.warning("Ignoring this library's header in %s (%s); reading it as a plain checkpoint.", path, exc)
            return {}
    try:
        meta = json.loads(raw[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CorruptCheckpointError(f"Malformed '{METADATA_KEY}' header metadata in {path}: {exc}.", path=path) from exc
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses hf_lottery_verify format version {version!r}; this release reads up to "
            f"{FORMAT_VERSION}. Upgrade hf_lottery_verify.",
            path=path,
        )
    if meta.get("layout") not in LAYOUTS:
        raise CorruptCheckpointError(f"Unknown layout {meta.get('layout')!r} in {path}.", path=path)
    return meta


def _decode_ours(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: str | None, *, check_consistency: bool = True,
    lenient: bool = False,
) -> tuple[dict, MaskDict]:
    """Turn a file of our layout back into a dense state dict and masks."""
    digest = meta.get("sha256")
    if lenient and digest is not None and _tensor_digest(tensors) != digest:
        logger.warning("Checksum mismatch in %s: the weights were changed after saving; using them as they are.",
                       path)
    elif digest is not None and _tensor_digest(tensors) != digest:
        raise CorruptCheckpointError(
            f"Checksum mismatch in {path}: the tensor data was altered or damaged after saving. "
            "Download or save the checkpoint again.",
            path=path,
        )
    masks: MaskDict = {}
    state_dict: dict[str, torch.Tensor] = {}
    mask_info = meta.get("masks", {})
    try:
        for name, info in mask_info.items():
            shape = tuple(info["shape"])
            if meta["layout"] == "compact":
                values = tensors.pop(VALUES_PREFIX + name)
                mask = decode_positions(
                    tensors.pop(LOW_PREFIX + name),
                    tensors.pop(HIGH_PREFIX + name),
                    int(info["low_bits"]),
                    kept=int(info["kept"]),
                    shape=shape,
                )
                if values.numel() != int(info["kept"]):
                    raise CorruptCheckpointError(
                        f"'{name}' stores {values.numel()} values for {info['kept']} kept weights.", path=path
                    )
                dense = torch.zeros(shape, dtype=values.dtype)
                dense[mask] = values
                state_dict[name] = dense
            else:
                mask = unpack_bits(tensors.pop(MASK_PREFIX + name), shape)
                if int(mask.sum()) != int(info["kept"]):
                    raise CorruptCheckpointError(f"Mask of '{name}' does not match its kept count.", path=path)
            masks[name] = mask
    except KeyError as exc:
        raise CorruptCheckpointError(f"{path} lacks tensor {exc} that its header announces.", path=path) from exc
    for name, tensor in tensors.items():
        if name.startswith((MASK_PREFIX, VALUES_PREFIX, LOW_PREFIX, HIGH_PREFIX)):
            raise CorruptCheckpointError(f"{path} holds '{name}' without a header entry.", path=path)
        state_dict[name] = tensor
    for name, mask in masks.items():
        if name not in state_dict:
            raise CorruptCheckpointError(f"{path} has a mask for '{name}' but no such weight.", path=path)
        if state_dict[name].shape != mask.shape:
            raise CorruptCheckpointError(f"Mask and weight shapes differ for '{name}' in {path}.", path=path)
        stray = int((state_dict[name][~mask] != 0).sum()) if check_consistency else 0
        if stray:
            raise MaskInconsistencyError(
                f"'{name}' in {path} has {stray} non-zero weight(s) where its stored mask prunes. "
                "The weights were edited after masking; load them with load_model(..., masks='weights') "
                "to derive masks from the non-zero weights instead.",
                path=path,
            )
    return state_dict, masks


def canonicalize_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map keys of other layouts to timm's names (strip ``timm_model.``, ``module.``, ``_orig_mod.``).

    Args:
        state_dict: Tensors by name.

    Returns:
        A new dict with canonical names.

    Raises:
        CheckpointError: Two keys map to the same canonical name.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = key
        stripped = True
        while stripped:
            stripped = False
            for prefix in _FOREIGN_PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix) :], True
        if name in out:
            raise CheckpointError(f"Keys '{key}' and another one both map to '{name}'; the checkpoint is ambiguous.")
        out[name] = value
    return out


# --------------------------------------------------------------------------- folders


def find_weight_files(folder: str | os.PathLike) -> list[Path]:
    """The safetensors files holding a folder's weights (one file or the shards of an index).

    Args:
        folder: A model folder.

    Returns:
        Paths of the files to read.

    Raises:
        PickleRefusedError: Only pickle-based weight files are present.
        CheckpointError: No weights at all, or a broken shard index.
    """
    folder = Path(folder)
    single = folder / WEIGHTS_NAME
    if single.is_file():
        return [single]
    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CorruptCheckpointError(f"Malformed shard index {index}: {exc}.", path=str(index)) from exc
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise CheckpointError(f"Shard index {index} names missing files: {missing}.", path=str(folder))
        return [folder / s for s in shards]
    others = sorted(folder.glob("*.safetensors"))
    if len(others) == 1:
        return others
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise PickleRefusedError(
            f"{folder} holds only pickle weights ({', '.join(pickles)}). hf_lottery_verify never unpickles "
            "(it runs arbitrary code). Convert the checkpoint to safetensors in a trusted environment, e.g. "
            "`safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')`.",
            path=str(folder),
        )
    if len(others) > 1:
        raise CheckpointError(
            f"{folder} holds several safetensors files ({[p.name for p in others]}) and no "
            f"{WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}; pass the file to load explicitly.",
            path=str(folder),
        )
    raise CheckpointError(f"No weights found in {folder}: expected {WEIGHTS_NAME}.", path=str(folder))


def _read_config(folder: Path) -> dict[str, Any] | None:
    cfg = folder / CONFIG_NAME
    if not cfg.is_file():
        return None
    try:
        return json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptCheckpointError(f"Malformed {cfg}: {exc}.", path=str(cfg)) from exc


def read_checkpoint(
    source: str | os.PathLike | Mapping[str, torch.Tensor], *, check_masks: bool = True, lenient: bool = False
) -> CheckpointContents:
    """Read a checkpoint of any supported layout into canonical timm names.

    Args:
        source: A model folder, a ``.safetensors`` file, or a state dict.
        check_masks: Refuse stored masks that disagree with the stored weights
            (:class:`~hf_lottery_verify.errors.MaskInconsistencyError`).
        lenient: Read a *suspect's* file: a header that is malformed, of an unknown
            version or whose checksum no longer matches is logged and ignored instead of
            refused, so that a thief cannot block verification by editing it.

    Returns:
        The checkpoint's contents; ``masks`` is set only for this library's layouts.

    Raises:
        PickleRefusedError: The source is (or holds only) pickle files.
        CorruptCheckpointError: Truncated or corrupted files.
        CheckpointError: Missing files or inconsistent contents.
    """
    if isinstance(source, Mapping):
        tensors = {k: v for k, v in source.items()}
        bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise CheckpointError(f"State dict entries are not tensors: {bad[:5]}.")
        layout = "timm_wrapper" if any(k.startswith("timm_model.") for k in tensors) else "state_dict"
        return CheckpointContents(state_dict=canonicalize_state_dict(tensors), layout=layout)
    path = Path(source)
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            raise PickleRefusedError(
                f"{path} is a pickle file; hf_lottery_verify never unpickles. Convert it to safetensors first.",
                path=str(path),
            )
        files, config = [path], _read_config(path.parent) if (path.parent / CONFIG_NAME).is_file() else None
    elif path.is_dir():
        files, config = find_weight_files(path), _read_config(path)
    else:
        raise CheckpointError(f"No such file or folder: {path}", path=str(path))

    tensors: dict[str, torch.Tensor] = {}
    raws: list[dict[str, str]] = []
    for f in files:
        t, raw = read_safetensors(f)
        dup = set(t) & set(tensors)
        if dup:
            raise CorruptCheckpointError(f"Tensor(s) {sorted(dup)[:3]} appear in several shards.", path=str(path))
        tensors.update(t)
        raws.append(raw)
    meta = _parse_our_metadata(raws[0], str(files[0]), lenient=lenient) if len(files) == 1 else {}
    if meta:
        state_dict, masks = _decode_ours(tensors, meta, str(files[0]), check_consistency=check_masks,
                                         lenient=lenient)
        return CheckpointContents(
            state_dict=state_dict, masks=masks, metadata=meta, config=config, layout=meta["layout"], path=str(path)
        )
    is_wrapper = (config or {}).get("model_type") == "timm_wrapper" or any(k.startswith("timm_model.") for k in tensors)
    return CheckpointContents(
        state_dict=canonicalize_state_dict(tensors),
        config=config,
        layout="timm_wrapper" if is_wrapper else "timm",
        path=str(path),
    )
