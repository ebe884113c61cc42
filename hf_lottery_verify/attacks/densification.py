"""The ``densify`` structural attack: :func:`densify` fills every pruned position with tiny
noise, so the ticket looks dense (not function-preserving: outputs move by about ``scale``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..masks import masks_from_weights, prunable_parameter_names
from ._common import _check_seed, _prepare

__all__ = ["densify"]


@torch.no_grad()
def densify(model: nn.Module, *, seed: int, scale: float = 1e-4) -> nn.Module:
    """Fill every pruned position with tiny random values (a dense-looking copy of the ticket).

    Each pruned entry of a masked parameter (for a bare ResNet: each exactly-zero entry
    of the prunable convolutions) becomes ``± scale · rms · u`` with ``u`` uniform in
    ``[0.5, 1.5)`` and ``rms`` the root mean square of that parameter's kept weights,
    so every pruned position is non-zero. **Not exactly function-preserving**: outputs
    move by a few times ``scale`` relative to their size. The model's masks become all-ones
    (rebuilt from the non-zero weights).

    On its own, a per-layer top-``k`` by magnitude (``k`` from the owner's key) recovers
    the mask; combined with :func:`rescale_channels` it does not (see the notes of :mod:`hf_lottery_verify.attacks.structural`):
    re-align or normalise channels first.

    Args:
        model: A :class:`~hf_lottery_verify.SparseResNetForImageClassification` or a timm ResNet.
        seed: Seed of the noise.
        scale (`float`, *optional*, defaults to 1e-4): Noise level relative to each layer's kept weights.

    Returns:
        The attacked copy.

    Raises:
        ValueError: ``scale`` is not positive.
    """
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"densify needs a positive finite scale, got {scale}.")
    gen = _check_seed(seed)
    attacked, net, masks = _prepare(model)
    params = dict(net.named_parameters())
    had_masks = bool(masks)
    if not masks:
        masks = {n: params[n].detach() != 0 for n in prunable_parameter_names(net)}
    for name, p in params.items():  # named_parameters order: deterministic draws
        if name not in masks:
            continue
        kept = masks[name].to(p.device)
        values = p.detach().double()[kept]
        rms = float(values.pow(2).mean().sqrt()) if values.numel() else float(p.detach().double().abs().max() or 1.0)
        u = 0.5 + torch.rand(p.shape, generator=gen, dtype=torch.float64)
        sign = torch.where(torch.rand(p.shape, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
        noise = (scale * rms * u * sign).to(p.dtype).to(p.device)
        p.copy_(torch.where(kept, p, noise))
    if had_masks:
        attacked.set_masks(masks_from_weights(params, list(masks)), apply=False)
    return attacked
