"""Plumbing shared by the structural attacks: the attacked deep copy, the seed and
space-selection checks, and broadcasting per-channel factors."""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

__all__ = ["SpaceSelection"]

SpaceSelection = Literal["all", "internal", "streams"]
_SELECTIONS: dict[str, tuple[str, ...]] = {"all": ("internal", "stream"), "internal": ("internal",),
                                           "streams": ("stream",)}


def _prepare(model: nn.Module) -> tuple[nn.Module, nn.Module, dict[str, torch.Tensor] | None]:
    """A deep copy of ``model``, its timm ResNet and its masks (``None`` for a bare ResNet)."""
    attacked = copy.deepcopy(model)
    net = getattr(attacked, "timm_model", attacked)
    masks = attacked.masks if hasattr(attacked, "set_masks") else None
    return attacked, net, masks


def _tensors(net: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(net.named_parameters()), **dict(net.named_buffers())}


def _selected(selection: str) -> tuple[str, ...]:
    if selection not in _SELECTIONS:
        raise ValueError(f"Unknown space selection '{selection}': use one of {sorted(_SELECTIONS)}.")
    return _SELECTIONS[selection]


def _check_seed(seed: int) -> torch.Generator:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}.")
    return torch.Generator().manual_seed(seed)


def _shape_for(dim: int, ndim: int, values: torch.Tensor) -> torch.Tensor:
    """``values`` reshaped to broadcast along dimension ``dim`` of an ``ndim``-D tensor."""
    shape = [1] * ndim
    shape[dim] = -1
    return values.reshape(shape)
