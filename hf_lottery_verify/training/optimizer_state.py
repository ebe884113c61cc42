"""Optimizer state as safetensors: :func:`save_optimizer_state` writes tensors as tensors
and the rest as JSON metadata, :func:`load_optimizer_state` reads it back without pickle."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import TrainingError

__all__ = ["save_optimizer_state", "load_optimizer_state"]


def _flatten_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON skeleton of an optimizer state dict; its tensors go to ``tensors`` under their path."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, Mapping):
        return {"__dict__": [[_flatten_state(k, f"{prefix}.key{i}", tensors), _flatten_state(v, f"{prefix}.{k}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TrainingError(f"Cannot store optimizer state of type {type(obj).__name__} in safetensors.")


def _unflatten_state(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_unflatten_state(v, tensors) for v in obj["__tuple__"])
        return {_unflatten_state(k, tensors): _unflatten_state(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_unflatten_state(v, tensors) for v in obj]
    return obj


def save_optimizer_state(optimizer: torch.optim.Optimizer, path: str | os.PathLike) -> None:
    """Write ``optimizer.state_dict()`` as safetensors: tensors as tensors, the rest as JSON metadata.

    Args:
        optimizer: The optimizer (or Accelerate's wrapper).
        path: The file to write.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten_state(optimizer.state_dict(), "optimizer", tensors)
    save_file(tensors, str(path), metadata={"format": "pt", "optimizer_state_dict": json.dumps(skeleton)})


def load_optimizer_state(optimizer: torch.optim.Optimizer, path: str | os.PathLike) -> None:
    """Load a state written by :func:`save_optimizer_state` into ``optimizer`` (no pickle involved).

    State tensors take their parameter's device, dtype and memory layout.

    Raises:
        TrainingError: The file holds no optimizer state.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    if "optimizer_state_dict" not in metadata:
        raise TrainingError(f"{path} holds no optimizer state.")
    optimizer.load_state_dict(_unflatten_state(json.loads(metadata["optimizer_state_dict"]), tensors))
    inner = getattr(optimizer, "optimizer", optimizer)
    for p, state in inner.state.items():
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                state[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)
