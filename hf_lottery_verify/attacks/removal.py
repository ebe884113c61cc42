"""Removal attacks a thief may run on a stolen ticket (the paper's Section 5), and defenses.

Each attack returns a *new* model and leaves its input untouched, so one signed ticket
can be attacked many ways in a row. The suspect's mask is always re-derived from its
weights by the verifier; attacks therefore only change weights (and clear the stored
masks to the non-zero pattern, as a thief's re-saved checkpoint would).

* :func:`prune_attack` — one-shot magnitude (OMP) or random pruning of a share of the
  kept weights (Tables 5 and 6: 5–50%).
* :func:`addon_attack` — switch on a share of the pruned positions with noise (Table 8:
  0.5–10%). The owner's defense (:func:`hf_lottery_verify.recovery.recover_masks`, applied
  by every verification) keeps, per layer, only as many weights as the signed ticket had,
  by magnitude.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from torch import nn

from ..masks import MaskDict, masks_from_weights
from ..pruning import magnitude_prune, random_prune, top_k_mask

__all__ = ["prune_attack", "addon_attack"]


def _params_and_masks(model: nn.Module) -> tuple[dict[str, torch.Tensor], MaskDict]:
    params = model.timm_parameters()
    return params, masks_from_weights(params, model.prunable_names())


@torch.no_grad()
def prune_attack(
    model: nn.Module,
    *,
    fraction: float,
    method: Literal["magnitude", "random"] = "magnitude",
    scope: Literal["global", "layer"] = "global",
    seed: int = 0,
) -> nn.Module:
    """Prune ``fraction`` of the suspect's non-zero prunable weights.

    Args:
        model: A :class:`~hf_lottery_verify.SparseResNetForImageClassification`.
        fraction: Share of the kept weights to remove (0.05–0.5 in the paper).
        method: ``magnitude`` (one-shot magnitude pruning, OMP) or ``random``.
        scope: ``global`` or per ``layer``.
        seed: Seed for random pruning.

    Returns:
        The attacked copy.
    """
    attacked = copy.deepcopy(model)
    params, masks = _params_and_masks(attacked)
    if method == "magnitude":
        new = magnitude_prune(params, masks, fraction=fraction, scope=scope)
    elif method == "random":
        new = random_prune(masks, fraction=fraction, scope=scope, seed=seed)
    else:
        raise ValueError(f"Unknown pruning attack '{method}': use 'magnitude' or 'random'.")
    attacked.set_masks(new)
    return attacked


@torch.no_grad()
def addon_attack(model: nn.Module, *, rate: float, scale: float = 0.5, seed: int = 0) -> nn.Module:
    """Switch on ``rate`` of the pruned prunable positions with Gaussian noise.

    The noise of each layer has standard deviation ``scale`` times the standard deviation
    of that layer's kept weights, so it is neither negligible nor obviously foreign.

    Args:
        model: The suspect.
        rate: Share of pruned positions to switch on (0.005–0.1 in the paper).
        scale: Noise level relative to the layer's kept weights.
        seed: Seed of positions and values.

    Returns:
        The attacked copy (its masks become the new non-zero pattern).
    """
    attacked = copy.deepcopy(model)
    params, masks = _params_and_masks(attacked)
    gen = torch.Generator().manual_seed(seed)
    new_masks = {}
    for name, mask in masks.items():
        w = params[name]
        pruned = ~mask.cpu()
        n_on = round(rate * int(pruned.sum()))
        scores = torch.rand(mask.shape, generator=gen, dtype=torch.float64).masked_fill(~pruned, -math.inf)
        on = top_k_mask(scores, n_on)
        kept = w.detach().cpu()[mask.cpu()]
        std = float(kept.std()) if kept.numel() > 1 else 1e-2
        noise = torch.randn(int(on.sum()), generator=gen) * std * scale
        w_cpu = w.detach().cpu().clone()
        w_cpu[on] = noise.to(w_cpu.dtype)
        w.copy_(w_cpu.to(w.device))
        new_masks[name] = w_cpu != 0
    attacked.set_masks(new_masks)
    return attacked
