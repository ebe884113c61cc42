"""Helpers shared by the key-mask modules (private: not part of the public API)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import MaskError
from ..masks import MaskDict
from .graph import timm_resnet

__all__: list[str] = []


def _ordered_names(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> list[str]:
    """Masked parameter names in the model's ``named_parameters`` (forward) order.

    The global ranking breaks ties by position, so the order must not depend on how a
    mask dict happened to be built or loaded.
    """
    params = [n for n, _ in timm_resnet(model).named_parameters()]
    unknown = [n for n in masks if n not in set(params)]
    if unknown:
        raise MaskError(f"Masks for unknown parameters {unknown[:3]}; mask names are timm parameter names.",
                        param_name=unknown[0])
    return [n for n in params if n in masks]


def _model_masks(model: nn.Module) -> MaskDict:
    masks = getattr(model, "masks", None)
    if not masks:
        raise MaskError("The model has no masks: prune it first (model.prune_(density=...)) or load a sparse ticket.")
    return dict(masks)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in timm_resnet(model).named_parameters()}
