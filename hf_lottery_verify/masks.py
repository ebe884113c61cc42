"""Masks: which weights a sparse ticket keeps.

A *mask dict* maps a parameter name (timm's own, e.g. ``layer2.0.conv1.weight``) to a
``torch.bool`` tensor of the parameter's shape; ``True`` means *kept*. Parameters that
are not in the dict are dense. Everything here is a pure function of tensors.

Paper terms: the paper's ``spar(M)`` is :func:`density` (the fraction of kept entries)
and ``rspar(M1, M2)`` is ``density(M1) / density(M2)``; the
4-D→2-D *squeeze* (:func:`squeeze_mask`) marks a kernel ``(out, in)`` as kept when any of
its weights is. Pruning lives in :mod:`hf_lottery_verify.pruning`, bit encodings in
:mod:`hf_lottery_verify.codecs`, and keeping pruned weights at zero during training in
:class:`hf_lottery_verify.training.MaskEnforcer`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from .errors import MaskError

__all__ = [
    "MaskDict",
    "TIMM_PREFIX",
    "timm_parameters",
    "prunable_parameter_names",
    "masks_from_weights",
    "check_masks",
    "density",
    "count_kept",
    "count_total",
    "squeeze_mask",
    "apply_masks_",
]

MaskDict = dict[str, torch.Tensor]

TIMM_PREFIX = "timm_model."
"""Prefix of the timm names in a ``SparseResNetForImageClassification.state_dict()``."""

# --------------------------------------------------------------------------- which parameters


def timm_parameters(
    source: nn.Module | Mapping[str, torch.Tensor], *, detach: bool = False
) -> dict[str, torch.Tensor]:
    """The tensors of a network by timm parameter name (``layer2.0.conv1.weight``), whatever holds them.

    The one place that reads "the timm parameters" of something that may be a model or a
    state dict; a :class:`~hf_lottery_verify.SparseResNetForImageClassification` at hand
    can also call its own ``timm_parameters()`` method (same result).

    Args:
        source (`nn.Module` or `Mapping[str, torch.Tensor]`):
            A model that wraps a timm network in ``timm_model`` (the parameters of the
            wrapped network), any other module (its own parameters), or a state dict (every
            entry, buffers included, with the wrapper's ``timm_model.`` prefix removed; an
            entry already named without the prefix wins over its prefixed twin).
        detach (`bool`, *optional*, defaults to `False`):
            Return ``tensor.detach()`` views (no autograd history) instead of the parameters.

    Returns:
        `dict[str, torch.Tensor]`: The tensors by timm name, in the network's
        ``named_parameters`` order (the state dict's order for a mapping). Nothing is copied.

    Raises:
        TypeError: ``source`` is neither a module nor a mapping.

    Example:
        >>> import torch
        >>> sorted(timm_parameters({"timm_model.fc.bias": torch.zeros(2), "fc.weight": torch.zeros(2, 3)}))
        ['fc.bias', 'fc.weight']
    """
    if isinstance(source, nn.Module):
        net = getattr(source, "timm_model", source)
        return {n: (p.detach() if detach else p) for n, p in net.named_parameters()}
    if isinstance(source, Mapping):
        out: dict[str, torch.Tensor] = {}
        for name, value in source.items():
            bare = name[len(TIMM_PREFIX):] if name.startswith(TIMM_PREFIX) else name
            if bare == name or bare not in source:
                out[bare] = value.detach() if detach else value
        return out
    raise TypeError(f"Expected a model or a state dict of tensors keyed by parameter name, got {type(source).__name__}.")



def prunable_parameter_names(
    model: nn.Module,
    *,
    include_stem: bool = False,
    include_classifier: bool = False,
) -> list[str]:
    """Names of the weights that pruning touches, in ``named_parameters`` order.

    The paper's default: every convolution weight except the stem (first) convolution;
    the classifier stays dense.

    Args:
        model: A timm ResNet (or anything with 4-D conv weights).
        include_stem: Also prune the first convolution (timm's ``first_conv``).
        include_classifier: Also prune the classifier weight (timm's ``classifier``).

    Returns:
        Parameter names.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    first_conv = cfg.get("first_conv", "conv1")
    classifier = cfg.get("classifier", "fc")
    first_convs = {first_conv} if isinstance(first_conv, str) else set(first_conv)
    classifiers = {classifier} if isinstance(classifier, str) else set(classifier)
    names = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter):
            continue
        if isinstance(module, nn.Conv2d):
            if name in first_convs and not include_stem:
                continue
            names.append(f"{name}.weight")
        elif isinstance(module, nn.Linear) and name in classifiers and include_classifier:
            names.append(f"{name}.weight")
    return names


def masks_from_weights(params: Mapping[str, torch.Tensor], names: Iterable[str]) -> MaskDict:
    """Recover masks from the weights themselves: kept = non-zero.

    This is how a suspect's mask is read: never trust a mask stored beside the weights.

    Args:
        params: Weight tensors by name.
        names: Which parameters to read.

    Returns:
        A mask dict.
    """
    return {n: params[n].detach() != 0 for n in names}


def check_masks(masks: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor]) -> None:
    """Validate a mask dict against parameters.

    Args:
        masks: The mask dict.
        params: Parameter tensors by name.

    Raises:
        MaskError: A name is not a parameter, a mask is not boolean, or shapes differ.
    """
    for name, mask in masks.items():
        if name not in params:
            close = [p for p in params if p.endswith(name.split(".")[-1])][:3]
            raise MaskError(
                f"Mask for unknown parameter '{name}'. Mask names are timm parameter names such as {close}.",
                param_name=name,
            )
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise MaskError(
                f"Mask for '{name}' must be a torch.bool tensor, got {got}; convert with `mask != 0`.",
                param_name=name,
            )
        if tuple(mask.shape) != tuple(params[name].shape):
            raise MaskError(
                f"Mask for '{name}' has shape {tuple(mask.shape)}, the parameter has {tuple(params[name].shape)}.",
                param_name=name,
            )


# --------------------------------------------------------------------------- sparsity


def count_kept(masks: Mapping[str, torch.Tensor] | torch.Tensor) -> int:
    """Number of kept entries in a mask or mask dict."""
    if isinstance(masks, torch.Tensor):
        return int(masks.sum())
    return sum(int(m.sum()) for m in masks.values())


def count_total(masks: Mapping[str, torch.Tensor] | torch.Tensor) -> int:
    """Number of entries a mask or mask dict covers."""
    if isinstance(masks, torch.Tensor):
        return masks.numel()
    return sum(m.numel() for m in masks.values())


def density(masks: Mapping[str, torch.Tensor] | torch.Tensor) -> float:
    """Fraction of kept entries (the paper's ``spar(M)``).

    Args:
        masks (`torch.Tensor` or `Mapping[str, torch.Tensor]`): A mask tensor or a mask dict.

    Returns:
        Kept entries divided by all entries (0.0 for an empty dict).
    """
    total = count_total(masks)
    return count_kept(masks) / total if total else 0.0


def squeeze_mask(mask: torch.Tensor) -> torch.Tensor:
    """The paper's 4-D→2-D squeeze: kernel ``(out, in)`` is kept if any of its weights is.

    Args:
        mask: A ``(out, in, kh, kw)`` (or already 2-D) boolean mask.

    Returns:
        A ``(out, in)`` boolean tensor.
    """
    if mask.dim() == 2:
        return mask.bool()
    if mask.dim() != 4:
        raise MaskError(f"squeeze_mask expects a 2-D or 4-D mask, got shape {tuple(mask.shape)}.")
    if mask.shape[2] * mask.shape[3] == 1:
        return mask.bool()[:, :, 0, 0]
    return mask.bool().flatten(2).any(dim=2)



# --------------------------------------------------------------------------- applying masks


@torch.no_grad()
def apply_masks_(params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
    """Zero every pruned weight in place (``+0.0``, never ``-0.0``).

    Args:
        params: Parameter tensors by name (modified in place).
        masks: The mask dict.
    """
    for name, mask in masks.items():
        p = params[name]
        p.masked_fill_(~mask.to(p.device), 0.0)
