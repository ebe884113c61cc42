"""Reading checkpoints (trusting their contents, not their form): this library's header
metadata, the compact layout, stored masks, shard indexes and the layouts of other
libraries, mapped to timm's names (:func:`read_checkpoint`). Files are read by
:mod:`.files`, which checks their form."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..codecs import decode_positions, unpack_bits
from ..errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    MaskError,
    MaskInconsistencyError,
    PickleRefusedError,
)
from ..masks import MaskDict
from .config import read_config
from .fileformat import (
    FORMAT_VERSION,
    HIGH_PREFIX,
    LAYOUTS,
    LOW_PREFIX,
    MASK_PREFIX,
    MASKS_METADATA_KEY,
    MASKS_NAME,
    METADATA_KEY,
    OUR_PREFIXES,
    PICKLE_SUFFIXES,
    VALUES_PREFIX,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    CheckpointContents,
    masks_path_for,
    tensor_digest,
)
from .files import load_json, name_some, read_json, read_safetensors, shape_of

__all__ = [
    "read_checkpoint",
    "parse_metadata",
    "canonicalize_state_dict",
    "strip_foreign_entries",
    "decode_compact",
    "find_weight_files",
]

# Prefixes other libraries put in front of timm's names: transformers' TimmWrapper,
# DistributedDataParallel, torch.compile.
_FOREIGN_PREFIXES = re.compile(r"^(?:timm_model\.|module\.|_orig_mod\.)+")
MAX_DENSE_ELEMENTS = 2**28
"""Most elements the compact layout may expand to in one file (1 GiB of float32; a ResNet-152 holds 60 M)."""


def parse_metadata(raw: Mapping[str, str], key: str = METADATA_KEY, *, path: str | None = None) -> dict[str, Any]:
    """Parse this library's JSON entry of a safetensors header.

    Args:
        raw (`Mapping[str, str]`): The header metadata.
        key (`str`, *optional*, defaults to `"hf_lottery_verify"`): The entry to parse.
        path (`str`, *optional*): For error messages.

    Returns:
        The parsed dict, or ``{}`` when the entry is absent.

    Raises:
        CorruptCheckpointError: The entry is not JSON, names an unknown layout or has
            malformed mask entries.
        CheckpointError: The format version is newer than this release reads.
    """
    if key not in raw:
        return {}
    meta = load_json(raw[key], where=f"the '{key}' header metadata of {path}", path=path)
    masks = meta.get("masks", {}) if isinstance(meta, dict) else None
    if not isinstance(masks, dict) or not all(
            isinstance(e, dict) and shape_of(e.get("shape")) is not None and type(e.get("kept", 0)) is int
            for e in masks.values()):
        raise CorruptCheckpointError(f"Malformed '{key}' header metadata in {path}: not a JSON object with mask "
                                     "entries of a shape and a kept count.", path=path)
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses hf_lottery_verify format version {version!r}; this release reads up to "
            f"{FORMAT_VERSION}. Upgrade hf_lottery_verify.",
            path=path,
        )
    if key == METADATA_KEY and meta.get("layout") not in LAYOUTS:
        raise CorruptCheckpointError(f"Unknown layout {meta.get('layout')!r} in {path}.", path=path)
    return meta


def decode_compact(
    tensors: Mapping[str, torch.Tensor],
    *,
    shapes: Mapping[str, tuple[int, ...]],
    path: str | None = None,
) -> tuple[dict[str, torch.Tensor], MaskDict]:
    """Rebuild dense tensors and masks from the compact layout.

    Only the tensors and the dense ``shapes`` are used: the kept count is the number of
    stored values and the low-bit width follows from it, so an edited header cannot change
    what is decoded (a wrong shape makes the position code fail its checks).

    Args:
        tensors (`Mapping[str, torch.Tensor]`): The file's tensors.
        shapes (`Mapping[str, tuple[int, ...]]`): Dense shape of each compact parameter.
        path (`str`, *optional*): For error messages.

    Returns:
        ``(state_dict, masks)``: every tensor in dense form, and the masks of the compact ones.

    Raises:
        CorruptCheckpointError: A compact parameter lacks a shape, its code is inconsistent,
            or the shapes add up to more than :data:`MAX_DENSE_ELEMENTS`.
    """
    dense: dict[str, torch.Tensor] = {}
    masks: MaskDict = {}
    total = sum(math.prod(shapes.get(k[len(VALUES_PREFIX):], ())) for k in tensors if k.startswith(VALUES_PREFIX))
    if total > MAX_DENSE_ELEMENTS:
        raise CorruptCheckpointError(f"{path}: the compact tensors' shapes add up to {total:,} elements, over the "
                                     f"{MAX_DENSE_ELEMENTS:,} this library expands.", path=path)
    for key, t in tensors.items():
        if key.startswith((LOW_PREFIX, HIGH_PREFIX, MASK_PREFIX)):
            continue
        if not key.startswith(VALUES_PREFIX):
            dense[key] = t
            continue
        name = key[len(VALUES_PREFIX):]
        if name not in shapes:
            raise CorruptCheckpointError(f"{path}: no shape known for the compact tensor '{name}'.", path=path)
        shape = tuple(int(s) for s in shapes[name])
        kept, n = t.numel(), math.prod(shape)
        low_bits = max(0, int(math.floor(math.log2(n / kept)))) if 0 < kept <= n else 0
        try:
            if kept > n:
                raise MaskError(f"{kept} values for {n} positions")
            mask = decode_positions(tensors[LOW_PREFIX + name], tensors[HIGH_PREFIX + name], low_bits, kept=kept,
                                    shape=shape)
        except (KeyError, MaskError) as exc:
            raise CorruptCheckpointError(f"{path}: the position code of '{name}' is damaged or does not fit shape "
                                         f"{shape}: {exc}", path=path) from exc
        w = torch.zeros(shape, dtype=t.dtype)
        w[mask] = t
        dense[name] = w
        masks[name] = mask
    return dense, masks


def _check_masks_against(state_dict: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], path: str | None,
                         *, check_consistency: bool) -> None:
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


def _unpack_masks(tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any], path: str | None, *,
                  prefix: str = "") -> MaskDict:
    masks: MaskDict = {}
    try:
        for name, entry in info.items():
            mask = unpack_bits(tensors[prefix + name], tuple(entry["shape"]))
            if int(mask.sum()) != int(entry["kept"]):
                raise CorruptCheckpointError(f"Mask of '{name}' does not match its kept count in {path}.", path=path)
            masks[name] = mask
    except KeyError as exc:
        raise CorruptCheckpointError(f"{path} lacks tensor {exc} that its header announces.", path=path) from exc
    except MaskError as exc:
        raise CorruptCheckpointError(f"{path}: {exc}", path=path) from exc
    return masks


def _read_masks_file(path: Path, state_dict: Mapping[str, torch.Tensor], weights_digest: str | None) -> MaskDict:
    tensors, raw = read_safetensors(path)
    meta = parse_metadata(raw, MASKS_METADATA_KEY, path=str(path))
    if not meta:
        raise CorruptCheckpointError(f"{path} is not a masks file written by hf_lottery_verify.", path=str(path))
    if weights_digest and meta.get("weights_sha256") not in (None, weights_digest):
        raise MaskInconsistencyError(
            f"{path} belongs to other weights than {WEIGHTS_NAME} beside it (checksum differs). Delete it to "
            "derive the masks from the non-zero weights, or save the model again.", path=str(path))
    masks = _unpack_masks(tensors, meta.get("masks", {}), str(path))
    extra = set(tensors) - set(masks)
    if extra:
        raise CorruptCheckpointError(f"{path} holds tensors without a header entry: {sorted(extra)[:3]}.",
                                     path=str(path))
    return masks


def canonicalize_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map keys of other layouts to timm's names (strip ``timm_model.``, ``module.``, ``_orig_mod.``).

    Args:
        state_dict (`Mapping[str, torch.Tensor]`): Tensors by name.

    Returns:
        A new dict with canonical names.

    Raises:
        CheckpointError: Two keys map to the same canonical name.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = _FOREIGN_PREFIXES.sub("", key)
        if name in out:
            raise CheckpointError(f"Keys '{key}' and another one both map to '{name}'; the checkpoint is ambiguous.")
        out[name] = value
    return out


def strip_foreign_entries(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Drop the non-weight entries this library may have put into a weights file (v1 masks).

    Args:
        tensors (`Mapping[str, torch.Tensor]`): A file's tensors (compact entries decoded already).

    Returns:
        ``(weights, dropped_names)``.
    """
    dropped = [k for k in tensors if k.startswith(OUR_PREFIXES)]
    return {k: v for k, v in tensors.items() if not k.startswith(OUR_PREFIXES)}, dropped


def find_weight_files(folder: str | os.PathLike) -> list[Path]:
    """The safetensors files holding a folder's weights (one file or the shards of an index).

    Args:
        folder (`str` or `os.PathLike`): A model folder, or a weights file (returned as it is).

    Returns:
        Paths of the files to read.

    Raises:
        PickleRefusedError: ``folder`` is a pickle file, or only pickle weight files are present.
        CheckpointNotFoundError: ``folder`` does not exist.
        CheckpointError: No weights at all, or a broken shard index (shards must be
            ``.safetensors`` files in the same folder).
    """
    folder = Path(folder)
    if not folder.is_dir():  # a file, or a FIFO or a link loop that the reader refuses with a clear message
        if not os.path.lexists(folder):
            raise CheckpointNotFoundError(f"No such file or folder: {folder}", path=str(folder))
        if folder.suffix in PICKLE_SUFFIXES:
            raise PickleRefusedError(f"{folder} is a pickle file; hf_lottery_verify never unpickles. Convert it "
                                     "to safetensors in a trusted environment first.", path=str(folder))
        return [folder]
    single = folder / WEIGHTS_NAME
    if os.path.lexists(single):  # whatever it is: the reader refuses links to nowhere, FIFOs and devices
        return [single]
    index = folder / WEIGHTS_INDEX_NAME
    if os.path.lexists(index):
        weight_map = read_json(index)
        weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
        shards = sorted(set(weight_map.values())) if isinstance(weight_map, dict) and all(
            isinstance(s, str) for s in weight_map.values()) else None
        if not shards or not all(s == Path(s).name and s.endswith(".safetensors") for s in shards):
            raise CorruptCheckpointError(f"Malformed shard index {index}: its weight_map must name .safetensors "
                                         "files of the same folder.", path=str(index))
        missing = [s for s in shards if not os.path.lexists(folder / s)]
        if missing:
            raise CheckpointError(f"Shard index {index} names missing files: {name_some(missing)}.",
                                  path=str(folder))
        return [folder / s for s in shards]
    others = sorted(p for p in folder.glob("*.safetensors") if not p.name.endswith(MASKS_NAME))
    if len(others) == 1:
        return others
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not others:
        raise PickleRefusedError(
            f"{folder} holds only pickle weights ({name_some(pickles)}). hf_lottery_verify never unpickles "
            "(it runs arbitrary code). Convert the checkpoint to safetensors in a trusted environment, e.g. "
            "`safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')`.",
            path=str(folder),
        )
    if len(others) > 1:
        raise CheckpointError(
            f"{folder} holds several safetensors files ({name_some([p.name for p in others])}) and no "
            f"{WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}; pass the file to load explicitly.",
            path=str(folder),
        )
    raise CheckpointError(f"No weights found in {folder}: expected {WEIGHTS_NAME}.", path=str(folder))


def read_checkpoint(source: str | os.PathLike | Mapping[str, torch.Tensor], *, check_masks: bool = True
                    ) -> CheckpointContents:
    """Read a checkpoint of any supported layout into canonical timm names (trusting it).

    Args:
        source (`str`, `os.PathLike` or `Mapping[str, torch.Tensor]`): A model folder, a
            ``.safetensors`` file, or a state dict.
        check_masks (`bool`, *optional*, defaults to `True`): Refuse stored masks that
            disagree with the stored weights
            (:class:`~hf_lottery_verify.errors.MaskInconsistencyError`); with ``False`` such
            masks are dropped (the caller derives masks from the weights).

    Returns:
        The checkpoint's contents; ``masks`` is set when this library stored masks.

    Raises:
        PickleRefusedError: The source is (or holds only) pickle files.
        CorruptCheckpointError: Truncated or corrupted files, a checksum mismatch.
        CheckpointError: Missing files or inconsistent contents.
    """
    if isinstance(source, Mapping):
        tensors = dict(source.items())
        bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise CheckpointError(f"State dict entries are not tensors: {bad[:5]}.")
        layout = "timm_wrapper" if any(k.startswith("timm_model.") for k in tensors) else "state_dict"
        return CheckpointContents(state_dict=canonicalize_state_dict(tensors), layout=layout)
    path = Path(source)
    files = find_weight_files(path)
    config = read_config(path if path.is_dir() else path.parent)
    tensors = {}
    for f in files:
        t, raw = read_safetensors(f)
        dup = set(t) & set(tensors)
        if dup:
            raise CorruptCheckpointError(f"Tensor(s) {name_some(sorted(dup))} appear in several shards.",
                                         path=str(path))
        tensors.update(t)
    meta = parse_metadata(raw, path=str(files[0])) if len(files) == 1 else {}
    if not meta:
        is_wrapper = (config or {}).get("model_type") == "timm_wrapper" or any(
            k.startswith("timm_model.") for k in tensors)
        return CheckpointContents(state_dict=canonicalize_state_dict(tensors), config=config,
                                  layout="timm_wrapper" if is_wrapper else "timm", path=str(path))
    where = str(files[0])
    digest = meta.get("sha256")
    if digest is not None and tensor_digest(tensors) != digest:
        raise CorruptCheckpointError(
            f"Checksum mismatch in {where}: the tensor data was altered or damaged after saving. "
            "Download or save the checkpoint again.",
            path=where,
        )
    info = meta.get("masks", {})
    masks: MaskDict | None
    if meta["layout"] == "compact":
        state_dict, masks = decode_compact(tensors, shapes={n: e["shape"] for n, e in info.items()}, path=where)
    elif meta["format_version"] == 1:
        masks = _unpack_masks(tensors, info, where, prefix=MASK_PREFIX)
        state_dict, _ = strip_foreign_entries(tensors)
    else:
        stray = [k for k in tensors if k.startswith(OUR_PREFIXES)]
        if stray:
            raise CorruptCheckpointError(f"{where} holds '{stray[0]}', which format version 2 never writes.",
                                         path=where)
        state_dict = tensors
        masks_file = masks_path_for(files[0])
        masks = _read_masks_file(masks_file, state_dict, digest) if masks_file.is_file() else None
    if masks:
        _check_masks_against(state_dict, masks, where, check_consistency=check_masks)
    return CheckpointContents(state_dict=state_dict, masks=masks or None, metadata=meta, config=config,
                              layout=meta["layout"], path=str(path))
