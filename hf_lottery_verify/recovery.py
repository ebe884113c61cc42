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
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch

from .errors import UnknownNameError
from .masks import MaskDict
from .pruning import top_k_mask

if TYPE_CHECKING:  # pragma: no cover - the alignment layer sits above this one
    from .alignment import Alignment, Reference

__all__ = ["recover_masks", "recover_aligned_masks", "noise_floor_scores"]


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


def _spread(values: torch.Tensor) -> float:
    """Median absolute deviation."""
    return float((values - values.median()).abs().median()) if values.numel() else 0.0


def _row_top_k(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The ``k[i]`` largest entries of each row ``i`` (ties: lower position first)."""
    flat = scores.reshape(scores.shape[0], -1)
    k = k.clamp(max=flat.shape[1])
    k_max = int(k.max()) if k.numel() else 0
    out = torch.zeros_like(flat, dtype=torch.bool)
    if k_max:
        order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k_max]
        out.scatter_(1, order, torch.arange(k_max)[None, :] < k[:, None])
    return out.reshape(scores.shape)


def recover_aligned_masks(alignment: Alignment, reference: Reference, names: Iterable[str] | None = None) -> MaskDict:
    """The suspect's masks in the reference's coordinates, after :func:`~hf_lottery_verify.alignment.align_suspect`.

    Row by row: a suspect row with no more non-zeros than the reference row keeps its
    non-zero pattern; a denser (densified) row keeps its ``k`` largest magnitudes, ``k``
    being the reference row's kept count. Only the reference's *counts* are used, never its
    positions, so an unrelated model does not inherit the reference's mask. Row scales do
    not change a row's ranking; input-channel scales do, so each layer ranks its entries
    with the alignment's estimated input scales undone where that makes the noise flat
    (densified, then rescaled), and as the suspect has them otherwise (rescaled, then
    densified: the noise was added flat). The noise's per-input-channel levels, fitted by
    a median polish, tell which.

    Args:
        alignment (`Alignment`): From :func:`~hf_lottery_verify.alignment.align_suspect`.
        reference (`Reference`): The reference it was aligned to.
        names (`Iterable[str]`, *optional*): Layers to recover; all masked layers of the
            reference by default.

    Only weights that can influence the output count (:attr:`Reference.live_only`: the
    alignment zeroed the suspect's function-free ones), so flooding them changes nothing.

    Returns:
        Boolean masks by name, shaped like the reference's.

    Raises:
        UnknownNameError: A name the reference has no mask for (a ``KeyError``).
    """
    reference = reference.live_only
    out: MaskDict = {}
    for name in (list(reference.masks) if names is None else list(names)):
        if name not in reference.masks:
            raise UnknownNameError("masked layer of the reference", name, available=reference.masks)
        aligned = alignment.state_dict[name]
        k = reference.kept_per_row[name]
        nz = aligned != 0
        dense = nz.reshape(nz.shape[0], -1).sum(1) > k
        if bool(dense.any()):
            rows = dense.nonzero().flatten()
            undone = alignment.recovery_weight(name, rows)
            _, levels = _noise_levels(undone, kept=float(k.sum()) / max(aligned.numel(), 1))
            log_scale = alignment.spaces[alignment.inputs[name]].scale.double().log()
            ranked = undone if _spread(levels) <= _spread(levels - log_scale) else aligned.index_select(0, rows)
            nz = nz.clone()
            nz[rows] = _row_top_k(ranked.double().abs(), k[rows])
        out[name] = nz
    return out
