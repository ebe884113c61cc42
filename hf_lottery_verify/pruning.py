"""Pruning: choose which kept weights to remove (magnitude, random), globally or per layer.

All functions are pure: they take weights and masks and return *new* masks. :func:`prune`
takes the CLI's ``--method`` values (``global_magnitude``, ``layer_magnitude``,
``global_random``, ``layer_random``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch

from .errors import DensityError, UnknownNameError
from .masks import MaskDict, count_kept, count_total

__all__ = [
    "top_k_mask",
    "global_top_k",
    "magnitude_prune",
    "random_prune",
    "prune",
    "PRUNING_METHODS",
]

Scope = Literal["global", "layer"]

def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Select exactly ``k`` largest scores, breaking ties by position (lower index wins).

    Runs in linear time (``kthvalue``) and is deterministic on every device.

    Args:
        scores: Scores of any shape; entries that must never be chosen hold ``-inf``.
        k: How many entries to select.

    Returns:
        A boolean tensor shaped like ``scores`` with exactly ``k`` ``True`` entries.

    Raises:
        DensityError: ``k`` is negative, larger than the number of entries, or larger than
            the number of finite scores.
        ValueError: ``scores`` contains NaN.
    """
    flat = scores.reshape(-1)
    n = flat.numel()
    if k < 0 or k > n:
        raise DensityError(f"Cannot select {k} of {n} entries.")
    if torch.isnan(flat).any():
        raise ValueError("Scores contain NaN; compute them in float64 or check the weights.")
    out = torch.zeros(n, dtype=torch.bool, device=flat.device)
    if k == 0:
        return out.view_as(scores)
    selectable = int((flat > -math.inf).sum())
    if k > selectable:
        raise DensityError(f"Cannot select {k} entries: only {selectable} are selectable (the rest are pruned).")
    threshold = torch.kthvalue(flat, n - k + 1).values
    above = flat > threshold
    out |= above
    need = k - int(above.sum())
    if need > 0:
        ties = torch.nonzero(flat == threshold).reshape(-1)[:need]
        out[ties] = True
    return out.view_as(scores)



def global_top_k(scores: Mapping[str, torch.Tensor], k: int) -> MaskDict:
    """Select exactly ``k`` entries over several tensors at once: concatenate → top-k → split back.

    Tensors are concatenated in the mapping's order (flattened row-major), so ties are
    broken by that order and then by position; pass the names in a canonical order (e.g.
    the model's ``named_parameters`` order) for results that do not depend on how the
    mapping was built. It is the library's one "concatenate, rank, split back" routine:
    global pruning, the V1 key split and fake keys, and the signature's kept-count
    rebalancing all select through it (callers that rank only some positions of a tensor
    pass the gathered 1-D scores and scatter the result back).

    Args:
        scores (`Mapping[str, torch.Tensor]`): Scores by name; ``-inf`` marks entries that
            must never be chosen.
        k (`int`): Number of entries to select over all tensors.

    Returns:
        `MaskDict`: Boolean masks shaped like each score tensor, in the mapping's order, with
        ``k`` ``True`` entries in all.

    Raises:
        DensityError: ``k`` cannot be selected (see :func:`top_k_mask`).
    """
    names = list(scores)
    if not names:
        if k:
            raise DensityError(f"Cannot select {k} entries from nothing.")
        return {}
    flat = torch.cat([scores[n].reshape(-1) for n in names])
    chosen = top_k_mask(flat, k)
    out, start = {}, 0
    for name in names:
        numel = scores[name].numel()
        out[name] = chosen[start: start + numel].view(scores[name].shape)
        start += numel
    return out

def _kept_count_target(total_kept: int, total: int, *, density: float | None, fraction: float | None) -> int:
    if (density is None) == (fraction is None):
        raise DensityError("Give exactly one of density= (target kept fraction of all weights) or fraction= "
                           "(share of the currently kept weights to remove).")
    if density is not None:
        if not 0.0 <= density <= 1.0:
            raise DensityError(f"density must lie in [0, 1], got {density}.")
        target = round(density * total)
        if target > total_kept:
            raise DensityError(
                f"Target density {density:.4%} keeps {target} weights but only {total_kept} are kept now; "
                "pruning can only remove weights."
            )
        return target
    assert fraction is not None
    if not 0.0 <= fraction <= 1.0:
        raise DensityError(f"fraction must lie in [0, 1], got {fraction}.")
    return total_kept - round(fraction * total_kept)


def _prune_by_scores(
    scores: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    *,
    density: float | None,
    fraction: float | None,
    scope: Scope,
) -> MaskDict:
    """Keep the highest-scoring currently-kept weights, globally or per layer."""
    if scope not in ("global", "layer"):
        raise UnknownNameError("pruning scope", str(scope), available=("global", "layer"))
    names = list(masks)
    if scope == "layer":
        out = {}
        for name in names:
            mask = masks[name]
            k = _kept_count_target(int(mask.sum()), mask.numel(), density=density, fraction=fraction)
            s = scores[name].double().masked_fill(~mask, -math.inf)
            out[name] = top_k_mask(s, k)
        return out
    total_kept = count_kept(masks)
    k = _kept_count_target(total_kept, count_total(masks), density=density, fraction=fraction)
    return global_top_k({n: scores[n].double().masked_fill(~masks[n], -math.inf) for n in names}, k)


def magnitude_prune(
    params: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    *,
    density: float | None = None,
    fraction: float | None = None,
    scope: Scope = "global",
) -> MaskDict:
    """Magnitude pruning: keep the largest ``|w|`` among the currently kept weights.

    Args:
        params: Weights by name (only the names in ``masks`` are read).
        masks: Current masks; pruning never revives a pruned weight.
        density: Target fraction of all masked weights to keep (exact: ``round(density·N)``).
        fraction: Alternatively, the share of currently kept weights to remove (IMP's 20%).
        scope: ``"global"`` ranks all layers together (the paper's IMP); ``"layer"`` prunes
            each layer by the same share.

    Returns:
        New masks (the inputs are not modified).

    Raises:
        DensityError: Neither or both of ``density``/``fraction``, or an unreachable target.
    """
    scores = {n: params[n].detach().abs() for n in masks}
    return _prune_by_scores(scores, masks, density=density, fraction=fraction, scope=scope)


def random_prune(
    masks: Mapping[str, torch.Tensor],
    *,
    density: float | None = None,
    fraction: float | None = None,
    scope: Scope = "global",
    seed: int = 0,
) -> MaskDict:
    """Random pruning: remove uniformly chosen kept weights.

    Args:
        masks: Current masks.
        density: Target fraction of all masked weights to keep.
        fraction: Alternatively, the share of currently kept weights to remove.
        scope: ``"global"`` or ``"layer"``.
        seed: Seed of the CPU generator; the same seed gives the same masks.

    Returns:
        New masks.
    """
    gen = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(m.shape, generator=gen, dtype=torch.float64).to(m.device) for n, m in masks.items()}
    return _prune_by_scores(scores, masks, density=density, fraction=fraction, scope=scope)


PRUNING_METHODS: tuple[str, ...] = ("global_magnitude", "layer_magnitude", "global_random", "layer_random")
"""The values of the CLI's ``--method``: ``<scope>_<criterion>``."""


def prune(
    params: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    *,
    method: str = "global_magnitude",
    density: float | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> MaskDict:
    """Prune by a registered method name (``global_magnitude``, ``layer_magnitude``,
    ``global_random``, ``layer_random``).

    Args:
        params: Weights by name.
        masks: Current masks.
        method: A name from :data:`PRUNING_METHODS`.
        density: Target kept fraction of the masked weights.
        fraction: Alternatively, share of the kept weights to remove.
        seed: Seed for random methods.

    Returns:
        New masks.

    Raises:
        UnknownNameError: ``method`` is not registered.
    """
    if method not in PRUNING_METHODS:
        raise UnknownNameError("pruning method", method, available=PRUNING_METHODS)
    scope, criterion = method.split("_")
    if criterion == "random":
        return random_prune(masks, density=density, fraction=fraction, scope=scope, seed=seed)
    return magnitude_prune(params, masks, density=density, fraction=fraction, scope=scope)
