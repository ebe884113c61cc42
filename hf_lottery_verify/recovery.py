"""Recovering a suspect's mask from its weights (the verifier never reads a stored mask).

A pruned ticket that was stolen as is keeps exact zeros where it is pruned, so its mask
is simply the non-zero pattern. A thief may *densify* it instead — fine-tune without the
mask, or switch pruned positions on with small noise (the paper's add-on attack) — and
then the owner's defense applies: per layer, keep only as many weights as the signed
ticket had, by magnitude (the count comes from the owner's key). Channel rescaling must
be undone before that ranking (:mod:`hf_lottery_verify.alignment` does it):
:func:`recover_aligned_masks` works on an aligned suspect, row by row, with the reference's
per-row kept counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from .masks import MaskDict
from .pruning import top_k_mask

__all__ = ["recover_masks", "noise_floor_scores"]


def recover_masks(weights: Mapping[str, torch.Tensor], kept: Mapping[str, int] | None = None) -> MaskDict:
    """The suspect's masks: non-zero weights, or (add-on defense) the ``kept[name]`` largest magnitudes.

    Args:
        weights (`Mapping[str, torch.Tensor]`): The suspect's weights by name (only these are read).
        kept (`Mapping[str, int]`, *optional*): Kept-weight count of each layer in the owner's
            ticket (from the key). A layer with more non-zeros than that keeps only its
            ``kept[name]`` largest magnitudes; layers not named (or ``kept=None``) give their
            non-zero pattern.

    Returns:
        Boolean masks by name, with at most ``kept[name]`` entries for the named layers.
    """
    out: MaskDict = {}
    for name, w in weights.items():
        nz = w != 0
        k = (kept or {}).get(name)
        if k is not None and int(nz.sum()) > k:
            out[name] = top_k_mask(w.abs().double().masked_fill(~nz, -math.inf), int(k))
        else:
            out[name] = nz
    return out


def _noise_levels(weight: torch.Tensor, *, kept: float, iterations: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row and per-input-channel levels of ``log|w|``'s noise (a median polish; see :func:`noise_floor_scores`)."""
    q = min(0.5, max(0.02, (1.0 - float(kept)) / 2))
    logs = weight.detach().double().abs().log()
    logs = torch.where(torch.isfinite(logs), logs, torch.full_like(logs, math.nan))
    n_out, n_in = logs.shape[:2]
    flat = logs.reshape(n_out, n_in, -1)
    row = torch.zeros(n_out, dtype=torch.float64)
    col = torch.zeros(n_in, dtype=torch.float64)

    def level(x: torch.Tensor) -> torch.Tensor:
        out = x.nanmedian(dim=1).values if q == 0.5 else torch.nanquantile(x, q, dim=1)
        return torch.nan_to_num(out, nan=0.0)

    for _ in range(iterations):
        row = level((flat - col[None, :, None]).reshape(n_out, -1))
        col = level((flat - row[:, None, None]).transpose(0, 1).reshape(n_in, -1))
    return row, col


def noise_floor_scores(weight: torch.Tensor, *, kept: float = 0.0, iterations: int = 3) -> torch.Tensor:
    """How far each entry stands above the noise floor: ``log|w| - row level - input-channel level``.

    A densified row is mostly noise; its level may vary per row and per input channel
    (densify, then rescale) or not (rescale, then densify). Robust levels of ``log|w|`` over
    the entries of every row and every input channel (dim 1) estimate both in either case
    (a median polish), so the kept weights stand out by their distance above the floor,
    whatever scales the thief applied. With a share ``kept`` of kept weights (which lie
    above the noise), the level is the noise's median: the ``(1 - kept) / 2`` quantile.

    Args:
        weight: A weight of at least 2 dimensions (rows along dim 0, input channels along dim 1).
        kept (`float`, *optional*, defaults to 0): Expected share of kept (non-noise) entries.
        iterations (`int`, *optional*, defaults to 3): Polish sweeps.

    Returns:
        float64 scores shaped like ``weight`` (0 is the floor; noise lies near it). Exact
        zeros score ``-inf``.
    """
    row, col = _noise_levels(weight, kept=kept, iterations=iterations)
    shape = [1] * weight.dim()
    shape[1] = -1
    logs = weight.detach().double().abs().log()
    return logs - row.reshape(-1, *([1] * (weight.dim() - 1))) - col.reshape(shape)
