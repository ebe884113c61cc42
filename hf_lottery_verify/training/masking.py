"""Masks under training: :class:`MaskEnforcer` keeps pruned weights at exactly ``+0.0``
while an optimizer steps (one fused gradient multiplication per step)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..masks import check_masks

__all__ = ["MaskEnforcer"]


# Optimizers whose update of an entry depends only on that entry's gradient, weight and state,
# and is exactly zero when all three are zero (weight decay included: wd·0 = 0).
_ELEMENTWISE_OPTIMIZERS: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adamax, torch.optim.NAdam,
    torch.optim.RAdam, torch.optim.RMSprop, torch.optim.Adagrad,
)


class MaskEnforcer:
    """Keeps pruned weights at exactly ``+0.0`` while an optimizer trains the model.

    Which guard is needed follows from the optimizer's update rule. SGD (momentum, weight
    decay, Nesterov), Adam(W), RMSprop, Adagrad and their kin update each entry from that
    entry's gradient, weight and optimizer state only. If, before every step, the gradient
    of a pruned entry is zero, then by induction its weight (``+0.0``) and its state stay
    zero: weight decay adds ``wd·0``, the momentum buffer stays ``0``, Adam's moments stay
    ``0`` and its update is ``0/(√0 + ε) = 0``, and ``+0.0 + (±0.0) = +0.0``. Zeroing the
    weights after the step alone would not be enough: the gradients of pruned weights are
    not zero (they depend on the layer's inputs, not on the weight), so momentum buffers
    would fill with them. The one guard for these optimizers is therefore a multiplication
    of the gradients by the float masks in an optimizer step pre-hook, one fused
    ``torch._foreach_mul_`` for all masked parameters, no per-parameter kernels, no hooks
    in the backward pass. Other optimizers (an update may mix entries, e.g. orthogonalised
    or second-order updates) also get the weights re-masked after each step.

    A non-finite gradient stays non-finite under the multiplication (``nan·0 = nan``); the
    :class:`Trainer` stops such a run with :class:`~hf_lottery_verify.errors.TrainingError`.

    Args:
        params: Parameters by name (``dict(model.named_parameters())``).
        masks: The mask dict; float copies laid out like each parameter are made on its device.

    Example:
        >>> enforcer = MaskEnforcer(dict(model.named_parameters()), model.masks)  # doctest: +SKIP
        >>> enforcer.attach(optimizer)   # doctest: +SKIP
    """

    def __init__(self, params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
        check_masks(masks, params)
        self._names = list(masks)
        self._params = [params[n] for n in self._names]
        self._pruned = [~masks[n].to(params[n].device) for n in self._names]
        with torch.no_grad():
            # same strides as the parameter (and its gradient): the foreach kernels take their fast path
            self._keep = [torch.empty_like(p).copy_(masks[n]) for n, p in zip(self._names, self._params, strict=True)]
        self._handles: list[Any] = []
        self.guard: str | None = None
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights now (``+0.0``)."""
        for p, pruned in zip(self._params, self._pruned, strict=True):
            p.masked_fill_(pruned, 0.0)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Multiply the present gradients by the masks (one fused kernel per device and dtype)."""
        grads, keep = [], []
        for p, k in zip(self._params, self._keep, strict=True):
            if p.grad is not None:
                grads.append(p.grad)
                keep.append(k)
        if grads:
            torch._foreach_mul_(grads, keep)

    @torch.no_grad()
    def mask_weights(self) -> None:
        """Re-mask the weights with fused kernels: ``w·m + 0.0`` (the addition turns ``-0.0`` into ``+0.0``)."""
        torch._foreach_mul_(self._params, self._keep)
        torch._foreach_add_(self._params, 0.0)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Guard every ``optimizer.step()`` from now on (and re-mask the weights after each step
        for optimizers outside the element-wise family listed above).

        Args:
            optimizer: A torch optimizer (or an object wrapping one in ``.optimizer``,
                like Accelerate's ``AcceleratedOptimizer``).
        """
        inner = getattr(optimizer, "optimizer", optimizer)
        self._handles.append(inner.register_step_pre_hook(lambda *_: self.mask_gradients()))
        self.guard = "gradients"
        if type(inner) not in _ELEMENTWISE_OPTIMIZERS:
            self._handles.append(inner.register_step_post_hook(lambda *_: self.mask_weights()))
            self.guard = "gradients+weights"

    def remove(self) -> None:
        """Remove every hook this enforcer registered."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.guard = None
