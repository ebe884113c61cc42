"""The ``ewp`` key-mask scorer: edge-weight-product over all input→output paths (PHEW),
computed in closed form as SynFlow's score on a linearised float64 copy of the ticket."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..architectures import stage_names
from .graph import timm_resnet

__all__ = ["score_ewp"]

logger = logging.getLogger(__name__)


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Mish, nn.Hardswish)


def _linearised_copy(net: nn.Module, masks: Mapping[str, torch.Tensor]) -> tuple[nn.Module, dict[str, nn.Parameter]]:
    """A float64 copy of ``net`` computing the path sums: weights ``|W ⊙ M|``, biases zero,
    batch norm and activations replaced by identities, max-pooling by average pooling."""
    lin = copy.deepcopy(net)
    for parent in list(lin.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, (nn.modules.batchnorm._BatchNorm, *_ACTIVATIONS)):
                setattr(parent, child_name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, child_name, nn.AvgPool2d(
                    child.kernel_size, child.stride, child.padding, ceil_mode=child.ceil_mode, count_include_pad=True))
    with torch.no_grad():
        for name, p in lin.named_parameters():
            if name.endswith("bias"):
                p.data = torch.zeros(p.shape, dtype=torch.float64)
            else:
                value = p.detach().to("cpu", torch.float64).abs()
                if name in masks:
                    value.mul_(masks[name].to("cpu"))
                p.data = value
            p.requires_grad_(name in masks)
    lin.double().eval()
    leaves = {name: p for name, p in lin.named_parameters() if name in masks}
    return lin, leaves


def score_ewp(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    *,
    seed: int = 0,
    input_size: tuple[int, int] | None = None,
    renormalize: bool = True,
) -> dict[str, torch.Tensor]:
    """Edge-weight-product (PHEW): the sum, over all input→output paths of the real network
    that pass through a weight, of the product of ``|w|`` along the path.

    This equals SynFlow's closed form, computed with one forward and one backward pass: a
    float64 copy of the timm model with ``|W ⊙ M|`` as weights (``|W|`` for unmasked
    parameters), zero biases, batch norm and activations replaced by identities (exact for
    ReLU, as every activation is non-negative) and max-pooling replaced by average pooling,
    is fed an all-ones input of the model's input size; the score of ``w`` is
    ``|w| · ∂(Σ outputs)/∂|w|``. Residual connections are part of the forward pass, so
    every path through them counts. The global average pooling contributes the same
    constant factor ``1/(H·W)`` to every path (so does a replaced max-pool, ``1/k²``), so it
    does not change the ranking; a kernel tap counts once per output pixel it reaches, as
    in the real network (taps that only meet zero padding at the border count less).

    Products span ``1e-2 … 1e50`` on real tickets, beyond float32. With ``renormalize``,
    every block output is divided by its maximum during the forward pass. Every
    input→output path crosses every block output, so this divides every score by the same
    factor; the factor is multiplied back when the result is representable in float64,
    and otherwise the scores are returned divided by it (the ranking, all a key split
    needs, is unchanged) with a warning.

    Args:
        model: The ticket.
        masks: Masked parameters to score.
        seed: Unused (the score is deterministic).
        input_size (`tuple[int, int]`, *optional*): ``(height, width)`` of the all-ones input;
            defaults to the model's ``pretrained_cfg["input_size"]``.
        renormalize (`bool`, *optional*, defaults to `True`): Rescale block outputs as above.

    Returns:
        ``float64`` scores by parameter name.

    Raises:
        FloatingPointError: The path sums overflow float64 (with ``renormalize=False``, or
            inside a single residual block).
    """
    net = timm_resnet(model)
    lin, leaves = _linearised_copy(net, masks)
    logs: list[float] = []

    def rescale(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        peak = float(output.detach().amax())
        if not math.isfinite(peak):
            raise FloatingPointError("EWP path sums overflowed float64 inside one residual block.")
        if peak <= 0.0:
            return output
        logs.append(math.log(peak))
        return output / peak

    if renormalize:
        for stage in stage_names(lin):
            for block in getattr(lin, stage).children():
                block.register_forward_hook(rescale)
    first_conv = next(m for m in lin.modules() if isinstance(m, nn.Conv2d))
    if input_size is None:
        cfg = getattr(net, "pretrained_cfg", None) or {}
        input_size = tuple(cfg.get("input_size", (3, 224, 224))[-2:])
    x = torch.ones((1, first_conv.in_channels, *input_size), dtype=torch.float64)
    total = lin(x).sum()
    if not bool(torch.isfinite(total)):
        raise FloatingPointError(
            "EWP path sums overflowed float64 (total = inf/nan); use renormalize=True, which rescales every "
            "block output and keeps the ranking exact."
        )
    if float(total.detach()) == 0.0:
        logger.warning("No input→output path survives in this ticket (or, with renormalize=False, the path sums "
                       "underflowed float64): every EWP score is 0.")
    grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    scaled = {name: w.detach() * g if g is not None else torch.zeros_like(w)
              for (name, w), g in zip(leaves.items(), grads, strict=True)}
    log_scale = sum(logs)
    factor = math.exp(log_scale) if log_scale < 700.0 else math.inf
    out = {name: s * factor for name, s in scaled.items()}
    if any(not bool(torch.isfinite(raw).all()) or bool(((raw == 0) & (scaled[n] != 0)).any()) for n, raw in out.items()):
        logger.warning("EWP scores exceed the float64 range by a common factor exp(%.1f); returning them divided "
                       "by it (the ranking is unchanged).", log_scale)
        return scaled
    return out
