"""The ``rescale`` structural attack: :func:`rescale_channels` multiplies channels by
positive factors and compensates in the batch norm or behind the ReLU (function-preserving
up to float rounding)."""

from __future__ import annotations

import logging
import math
from typing import Literal

import torch
from torch import nn

from ..spaces import channel_spaces
from ._common import _check_seed, _prepare, _shape_for, _tensors

__all__ = ["rescale_channels"]

logger = logging.getLogger(__name__)


def _log_uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))


@torch.no_grad()
def rescale_channels(
    model: nn.Module,
    *,
    seed: int,
    low: float = 0.05,
    high: float = 20.0,
    mode: Literal["bn", "relu", "both"] = "both",
) -> nn.Module:
    """Multiply channels by random positive factors and compensate so the function is unchanged.

    Factors are drawn log-uniformly from ``[low, high]``, one per channel.

    * ``mode="bn"``: each convolution followed by a batch norm gets its own factors ``a``:
      output channel ``c`` of the conv is multiplied by ``a_c`` and the batch norm absorbs
      it **exactly in eval mode**: ``running_mean *= a``, ``running_var *= a²`` and, because
      of the ``eps`` inside the square root, ``weight *= sqrt(a² var + eps) / (a sqrt(var + eps))``
      (``var`` the old running variance). In training mode (batch statistics) the
      compensation is exact up to that ``eps`` term.
    * ``mode="relu"``: for each space read only through a ReLU (all of them in a timm
      ResNet), the batch norms that produce it have ``weight`` and ``bias`` multiplied by
      ``a`` and the consumers' input columns divided by ``a`` (``relu(a x) = a relu(x)``).
      A residual stream gets one factor per channel for all of its producers; identity
      shortcuts carry the scale along, a zero-padding shortcut's injected channels keep
      their source's factors (its zero channels get their own).
    * ``mode="both"``: ``"relu"``, then ``"bn"``.

    Masks are unchanged (zeros stay zeros).

    Args:
        model: A :class:`~hf_lottery_verify.SparseResNetForImageClassification` or a timm ResNet.
        seed: Seed of the factors.
        low (`float`, *optional*, defaults to 0.05): Smallest factor (positive).
        high (`float`, *optional*, defaults to 20.0): Largest factor.
        mode (`str`, *optional*, defaults to `"both"`): ``"bn"``, ``"relu"`` or ``"both"``.

    Returns:
        The attacked copy.

    Raises:
        ValueError: ``low``/``high`` not with ``0 < low <= high``, or an unknown ``mode``.
        UnsupportedArchitectureError: The model is not a ResNet whose channels can be followed.
    """
    if not (0.0 < low <= high and math.isfinite(high)):
        raise ValueError(f"rescale_channels needs 0 < low <= high < inf; got low={low}, high={high}.")
    if mode not in ("bn", "relu", "both"):
        raise ValueError(f"Unknown rescale mode '{mode}': use 'bn', 'relu' or 'both'.")
    gen = _check_seed(seed)
    attacked, net, _masks = _prepare(model)
    all_spaces = channel_spaces(net)
    tensors = _tensors(net)

    def scale_(name: str, factors: torch.Tensor, dim: int, *, divide: bool = False) -> None:
        t = tensors[name]
        f = _shape_for(dim, t.dim(), factors.to(t.device))
        t.copy_((t.double() / f if divide else t.double() * f).to(t.dtype))

    if mode in ("relu", "both"):
        done: dict[str, torch.Tensor] = {}
        for space in all_spaces:
            if space.fixed:
                continue
            if not space.homogeneous:
                logger.info("Space '%s' is read through a non-homogeneous activation; not rescaled behind it.",
                            space.name)
                continue
            a = _log_uniform(space.size, low, high, gen)
            if space.injection is not None:
                inj = space.injection
                source = done.get(inj.source)
                n_src = next(s.size for s in all_spaces if s.name == inj.source)
                a[inj.offset:inj.offset + n_src] = source if source is not None else 1.0
            done[space.name] = a
            for _conv, norm in space.norms:
                scale_(f"{norm}.weight", a, 0)
                scale_(f"{norm}.bias", a, 0)
            for name in space.consumers:
                scale_(name, a, 1, divide=True)

    if mode in ("bn", "both"):
        for space in all_spaces:
            for conv, norm in space.norms:
                a = _log_uniform(space.size, low, high, gen)
                scale_(conv, a, 0)
                conv_bias = conv[: -len("weight")] + "bias"
                if conv_bias in space.producers:
                    scale_(conv_bias, a, 0)
                bn = net.get_submodule(norm)
                var = tensors[f"{norm}.running_var"].double()
                gamma_fix = torch.sqrt(a * a * var + bn.eps) / (a * torch.sqrt(var + bn.eps))
                scale_(f"{norm}.running_mean", a, 0)
                scale_(f"{norm}.running_var", a * a, 0)
                scale_(f"{norm}.weight", gamma_fix, 0)
    return attacked
