"""Helpers shared by the key-mask modules (private: not part of the public API)."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import MaskError, MissingWeightsError, ShapeMismatchError
from ..masks import MaskDict, timm_parameters
from .graph import timm_resnet

__all__: list[str] = []


def _ordered_names(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> list[str]:
    """Masked parameter names in the model's ``named_parameters`` (forward) order.

    The global ranking breaks ties by position, so the order must not depend on how a
    mask dict happened to be built or loaded.
    """
    params = list(timm_parameters(model))
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


def _scoring_model(
    model: nn.Module, score_weights: nn.Module | Mapping[str, torch.Tensor] | None
) -> nn.Module:
    """The network whose weights a scorer reads: ``model`` itself, or a copy of its timm
    ResNet carrying ``score_weights`` (e.g. the rewind weights ``W_k``).

    ``score_weights`` is a model (a ``SparseResNetForImageClassification`` or a timm
    ResNet) or a state dict keyed by timm parameter names (``conv1.weight``) or by the
    wrapper's names (``timm_model.conv1.weight``). Every parameter of the network must be
    present with its shape (loading is strict); buffers and other extra entries are
    ignored. Nothing of ``model`` is modified.

    Raises:
        TypeError: ``score_weights`` is neither a module nor a mapping.
        MissingWeightsError: A parameter of the network is missing from ``score_weights``.
        ShapeMismatchError: A parameter has another shape in ``score_weights``.
    """
    if score_weights is None:
        return model
    source = timm_parameters(score_weights, detach=isinstance(score_weights, nn.Module))  # a TypeError for others
    scoring = copy.deepcopy(timm_resnet(model))
    missing = [name for name, _ in scoring.named_parameters() if name not in source]
    if missing:
        arch = (getattr(scoring, "pretrained_cfg", None) or {}).get("architecture")
        raise MissingWeightsError(missing, arch=str(arch) if arch else None)
    with torch.no_grad():
        for name, param in scoring.named_parameters():
            if source[name].shape != param.shape:
                raise ShapeMismatchError(name, expected=tuple(param.shape), got=tuple(source[name].shape))
            param.copy_(source[name].detach().to(param.device, param.dtype))
    return scoring
