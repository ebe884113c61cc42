"""Plumbing shared by the attacks: the attacked deep copy (with its timm network and masks, or
with the masks read off its weights), masks re-read after an attack, the seed and space-selection
checks, and broadcasting per-channel factors."""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

from ..masks import masks_from_weights, timm_parameters

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


def _copy_with_masks(model: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A deep copy of ``model``, its timm parameters and the masks read off their non-zero weights."""
    attacked = copy.deepcopy(model)
    params = timm_parameters(attacked)
    return attacked, params, masks_from_weights(params, attacked.prunable_names())


def _remask(model: nn.Module) -> nn.Module:
    """Set ``model``'s masks to the non-zero pattern of its weights, as a re-saved checkpoint has them."""
    if hasattr(model, "set_masks"):
        model.set_masks(masks_from_weights(timm_parameters(model), model.prunable_names()), apply=False)
    return model


def _draw_like(kept: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` values drawn like ``kept``: resampled magnitudes with random signs (N(0, 0.05) when empty)."""
    if kept.numel() == 0:
        return torch.randn(count, generator=gen, dtype=torch.float64) * 0.05
    idx = torch.randint(kept.numel(), (count,), generator=gen)
    sign = torch.where(torch.rand(count, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
    return kept.double().abs()[idx] * sign


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
