"""The on-disk format of a ticket: file names, header keys, tensor-name prefixes and
version, the :class:`CheckpointContents` a read returns, and the tensor checksum
(:func:`tensor_digest`). Its public names are exported, and listed in ``__all__``, by
:mod:`hf_lottery_verify.storage`."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..masks import MaskDict

WEIGHTS_NAME = "model.safetensors"
MASKS_NAME = "masks.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
METADATA_KEY = "hf_lottery_verify"
MASKS_METADATA_KEY = "hf_lottery_verify_masks"
FORMAT_VERSION = 2
MASK_PREFIX = "masks."  # format version 1: masks inside model.safetensors
VALUES_PREFIX = "compact.values."
LOW_PREFIX = "compact.low."
HIGH_PREFIX = "compact.high."
OUR_PREFIXES = (MASK_PREFIX, VALUES_PREFIX, LOW_PREFIX, HIGH_PREFIX)
LAYOUTS = ("dense", "compact")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


@dataclass
class CheckpointContents:
    """What a checkpoint holds, in canonical timm names.

    Attributes:
        state_dict: Dense tensors by timm name (zeros where pruned).
        masks: Masks stored by this library, or ``None`` when none are stored.
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


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of tensors (order-independent).

    Args:
        tensors (`Mapping[str, torch.Tensor]`): Tensors by name.

    Returns:
        A hex digest.
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(json.dumps(list(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def masks_path_for(weights_path: str | os.PathLike) -> Path:
    """Where the masks of a weights file live: ``masks.safetensors`` beside ``model.safetensors``,
    ``<stem>.masks.safetensors`` beside any other file."""
    p = Path(weights_path)
    if p.name == WEIGHTS_NAME:
        return p.with_name(MASKS_NAME)
    return p.with_name(p.name.removesuffix(".safetensors") + ".masks.safetensors")
