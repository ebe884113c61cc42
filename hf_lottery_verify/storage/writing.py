"""Writing a ticket: :func:`write_checkpoint` stores weights and bit-packed masks (dense
layout) or kept values and Elias–Fano position codes (compact layout), atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..atomic import atomic_path
from ..codecs import encode_positions, pack_bits
from ..errors import CheckpointError
from .fileformat import (
    FORMAT_VERSION,
    HIGH_PREFIX,
    LOW_PREFIX,
    MASKS_METADATA_KEY,
    METADATA_KEY,
    VALUES_PREFIX,
    masks_path_for,
    tensor_digest,
)

__all__ = ["write_checkpoint"]


def _save_safetensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> int:
    with atomic_path(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata))
    return path.stat().st_size


# --------------------------------------------------------------------------- writing


def write_checkpoint(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    compact: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> int:
    """Write weights (and masks) atomically: ``path`` plus its masks file, or one compact file.

    Args:
        path (`str` or `os.PathLike`): The weights file (``.../model.safetensors``).
        state_dict (`Mapping[str, torch.Tensor]`): Tensors by timm name.
        masks (`Mapping[str, torch.Tensor]`, *optional*): Boolean masks by parameter name (a
            subset of ``state_dict``); written to :func:`masks_path_for` ``(path)``, or into
            the compact layout.
        compact (`bool`, *optional*, defaults to `False`): Store only kept values plus an
            Elias–Fano position code for masked parameters (bit-exact, far smaller for
            extreme tickets, readable by this library only).
        metadata (`Mapping[str, Any]`, *optional*): Extra JSON-serialisable entries for this
            library's header metadata (``arch``, the public claim, ...).

    Returns:
        Total size of the written files in bytes.

    Raises:
        CheckpointError: A mask names a tensor that is not in ``state_dict`` or differs in shape.
    """
    path = Path(path)
    masks = {n: m.detach().cpu() for n, m in (masks or {}).items()}
    weights = {n: t.detach().contiguous().cpu() for n, t in state_dict.items()}
    unknown = set(masks) - set(weights)
    if unknown:
        raise CheckpointError(f"Masks for tensors that are not in the state dict: {sorted(unknown)[:5]}.")
    info: dict[str, dict[str, Any]] = {}
    for name, mask in masks.items():
        if mask.shape != weights[name].shape:
            raise CheckpointError(f"Mask for '{name}' has shape {tuple(mask.shape)}, the weight "
                                  f"{tuple(weights[name].shape)}.")
        info[name] = {"shape": list(mask.shape), "kept": int(mask.sum())}
    ours: dict[str, Any] = {**dict(metadata or {}), "format_version": FORMAT_VERSION}
    stale_masks = masks_path_for(path)
    if compact:
        tensors: dict[str, torch.Tensor] = {}
        for name, t in weights.items():
            if name not in masks:
                tensors[name] = t
                continue
            low, high, low_bits = encode_positions(masks[name])
            tensors[VALUES_PREFIX + name] = t[masks[name]].contiguous()
            tensors[LOW_PREFIX + name] = low
            tensors[HIGH_PREFIX + name] = high
            info[name]["low_bits"] = low_bits
        ours.update(layout="compact", bit_order="big", masks=info, sha256=tensor_digest(tensors))
        size = _save_safetensors(path, tensors, {"format": "pt", METADATA_KEY: json.dumps(ours, sort_keys=True)})
        if stale_masks.exists():
            stale_masks.unlink()  # the compact file carries its masks
        return size
    digest = tensor_digest(weights)
    ours.update(layout="dense", sha256=digest)
    size = 0
    if masks:
        meta = {"format_version": FORMAT_VERSION, "bit_order": "big", "masks": info, "weights_sha256": digest}
        size += _save_safetensors(stale_masks, {n: pack_bits(m) for n, m in masks.items()},
                                  {"format": "pt", MASKS_METADATA_KEY: json.dumps(meta, sort_keys=True)})
    elif stale_masks.exists():
        stale_masks.unlink()  # a dense model must not pick up masks of an earlier save
    size += _save_safetensors(path, weights, {"format": "pt", METADATA_KEY: json.dumps(ours, sort_keys=True)})
    return size
