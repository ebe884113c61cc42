"""Writing module bits into kernels, and restoring the kept-weight counts afterwards.

Shared by both layouts. A *module* is one kernel ``(out, in)`` of a conv weight: it reads
1 when any of its ``kh × kw`` weights is kept. All functions work in place on CPU tensors
that the caller owns (copies of the model's weights and masks) and draw their non-secret
randomness (which position of a kernel to switch on, drawn values) from a
``torch.Generator`` the caller seeds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch

from ..errors import SignatureError
from ..pruning import global_top_k

__all__ = ["draw_like", "write_kernels", "rebalance", "restore_kept_counts"]

logger = logging.getLogger(__name__)


def draw_like(kept_values: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` values drawn from the layer's kept weights (empirical magnitudes, random sign).

    Args:
        kept_values (`torch.Tensor`): The layer's kept weights (any shape).
        n (`int`): How many values to draw.
        gen (`torch.Generator`): Seeded generator.

    Returns:
        A float tensor of ``n`` values (±0.01 when the layer keeps nothing).
    """
    if kept_values.numel() == 0:
        return torch.full((n,), 1e-2) * (torch.randint(0, 2, (n,), generator=gen) * 2 - 1)
    idx = torch.randint(0, kept_values.numel(), (n,), generator=gen)
    sign = torch.randint(0, 2, (n,), generator=gen) * 2 - 1
    return kept_values.reshape(-1)[idx].abs() * sign


def write_kernels(
    weight: torch.Tensor,
    mask: torch.Tensor,
    out_idx: torch.Tensor,
    in_idx: torch.Tensor,
    want: torch.Tensor,
    *,
    rewind: torch.Tensor | None,
    gen: torch.Generator,
    module_weights: int = 1,
) -> dict[str, int]:
    """Write one bit per kernel in place: a 0 clears the kernel, a 1 keeps at least ``module_weights``.

    A 1 over a kernel with fewer kept weights switches on seeded positions of it, with
    magnitudes drawn from the layer's kept weights (and the sign of ``rewind`` where it is
    non-zero). Rewind *values* would be smaller than the trained weights around them, so a
    thief's magnitude pruning or count rebalancing would remove exactly the signature's
    modules; retraining starts from the rewind weights anyway (:func:`~hf_lottery_verify.retrain`);
    with ``module_weights > 1``, pruning must remove all of them to flip the module.

    Args:
        weight (`torch.Tensor`): ``(out, in, kh, kw)`` weights, edited in place.
        mask (`torch.Tensor`): Its boolean mask, edited in place.
        out_idx (`torch.Tensor`), in_idx (`torch.Tensor`): Kernel coordinates (int64, one per bit).
        want (`torch.Tensor`): Boolean bits (True = kernel kept).
        rewind (`torch.Tensor`, *optional*): Rewind weights of the layer.
        gen (`torch.Generator`): Seeded generator.
        module_weights (`int`, *optional*, defaults to 1): Kept weights a 1-kernel needs.

    Returns:
        Counts: ``switched_on``, ``filled_kernels``, ``cleared_kernels``, ``cleared_weights``.
    """
    o, i = out_idx, in_idx
    kernels = mask[o, i].reshape(len(o), -1)  # (n, kh*kw)
    have = kernels.any(dim=1)
    kk = kernels.shape[1]
    clear = have & ~want
    cleared_weights = int(kernels[clear].sum())
    mask[o[clear], i[clear]] = False
    weight[o[clear], i[clear]] = 0.0
    need = max(1, min(module_weights, kk))
    counts = kernels.sum(dim=1)
    short = want & (counts < need)
    switched = 0
    if bool(short.any()):
        rows_k = kernels[short]
        scores = torch.rand(rows_k.shape, generator=gen).masked_fill(rows_k, -1.0)
        rank = torch.argsort(torch.argsort(scores, dim=1, descending=True), dim=1)
        pick = (rank < (need - counts[short])[:, None]) & ~rows_k
        r_idx, pos = torch.nonzero(pick, as_tuple=True)
        oo, ii = o[short][r_idx], i[short][r_idx]
        kw = weight.shape[3]
        py, px = pos // kw, pos % kw
        values = draw_like(weight[mask], len(pos), gen).to(weight.dtype)
        if rewind is not None:  # the rewind's sign, a kept weight's magnitude: no magnitude tell for a pruner
            from_rewind = rewind[oo, ii, py, px].to(weight.dtype)
            values = torch.where(from_rewind != 0, values.abs() * from_rewind.sign(), values)
        mask[oo, ii, py, px] = True
        weight[oo, ii, py, px] = values
        switched = len(pos)
    return {"switched_on": switched, "filled_kernels": int((~have & want).sum()), "cleared_kernels": int(clear.sum()),
            "cleared_weights": cleared_weights}


def rebalance(
    weights: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    eligible: Mapping[str, torch.Tensor],
    delta: int,
    *,
    rewind: Mapping[str, torch.Tensor] | None,
    gen: torch.Generator,
) -> int:
    """Undo a kept-count change of ``delta`` over the eligible positions of the named layers.

    ``delta > 0``: prune the ``delta`` smallest-magnitude eligible kept weights.
    ``delta < 0``: switch on ``-delta`` eligible pruned positions, largest rewind magnitude
    first (seeded random without rewind weights), with kept-weight magnitudes and the rewind sign.

    Args:
        weights (`Mapping[str, torch.Tensor]`): Weights of the layers (edited in place).
        masks (`Mapping[str, torch.Tensor]`): Masks (edited in place).
        eligible (`Mapping[str, torch.Tensor]`): Where changes are allowed, per layer (its keys,
            in order, are the layers considered).
        delta (`int`): Kept weights gained (> 0) or lost (< 0).
        rewind (`Mapping[str, torch.Tensor]`, *optional*): Rewind weights by name.
        gen (`torch.Generator`): Seeded generator.

    Returns:
        `int`: How many positions changed (at most ``|delta|``, fewer when the eligible
        positions do not allow more).
    """
    names = list(eligible)
    if delta == 0 or not names:
        return 0
    if delta > 0:
        # only the eligible kept weights compete (a few % of the layer): gather them in
        # (layer, position) order so that ties break exactly as over the full tensors
        where = {n: torch.nonzero((masks[n] & eligible[n]).reshape(-1)).reshape(-1) for n in names}
        k = min(delta, sum(int(w.numel()) for w in where.values()))
        picked = global_top_k({n: -weights[n].reshape(-1)[w].abs().double() for n, w in where.items()}, k)
        for n, w in where.items():
            sel = w[picked[n]]
            if sel.numel():
                masks[n].view(-1)[sel] = False
                weights[n].view(-1)[sel] = 0.0
        return k
    scores = {}
    for n in names:
        free = ~masks[n] & eligible[n]
        score = (rewind[n].abs().double() if rewind is not None and n in rewind
                 else torch.zeros(masks[n].shape, dtype=torch.float64))
        score = score + torch.rand(masks[n].shape, generator=gen, dtype=torch.float64) * 1e-12
        scores[n] = score.masked_fill(~free, -math.inf)
    k = min(-delta, sum(int((s > -math.inf).sum()) for s in scores.values()))
    chosen = global_top_k(scores, k)
    for n in names:
        pick = chosen[n]
        if not bool(pick.any()):
            continue
        values = draw_like(weights[n][masks[n]], int(pick.sum()), gen).to(weights[n].dtype)
        if rewind is not None and n in rewind:
            r = rewind[n][pick].to(weights[n].dtype)
            values = torch.where(r != 0, values.abs() * r.sign(), values)  # as in write_bits: no magnitude tell
        masks[n][pick] = True
        weights[n][pick] = values
    return k


def restore_kept_counts(
    params: Mapping[str, torch.Tensor],
    weights: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    kept_before: Mapping[str, int],
    protected: Mapping[str, torch.Tensor],
    *,
    rewind: Mapping[str, torch.Tensor] | None,
    gen: torch.Generator,
) -> dict[str, int]:
    """Bring every written layer back to its kept count, touching no protected kernel.

    First inside each written layer (the keys of ``weights``, in order); whatever a layer
    cannot absorb (it has too few kept or free positions outside the protected kernels) is
    rebalanced over all masked layers (in ``masks`` order) outside the protected kernels,
    so the total is always exact.

    Args:
        params (`Mapping[str, torch.Tensor]`): The model's parameters (copied into
            ``weights`` when a layer that was not written takes part in the rebalancing).
        weights (`dict[str, torch.Tensor]`): CPU copies of the written layers' weights (edited).
        masks (`dict[str, torch.Tensor]`): CPU copies of all masks (edited).
        kept_before (`Mapping[str, int]`): Kept counts before writing.
        protected (`Mapping[str, torch.Tensor]`): ``(out, in)`` boolean maps of the kernels
            that carry the signature, for the layers that have any.
        rewind (`Mapping[str, torch.Tensor]`, *optional*): Rewind weights by name (CPU).
        gen (`torch.Generator`): Seeded generator.

    Returns:
        ``compensated_in_layer`` and, when needed, ``compensated_elsewhere``.

    Raises:
        SignatureError: Not even all layers together have room (e.g. a model with nothing
            pruned): prune first.
    """
    outside = {}
    for n, m in masks.items():
        if n in protected:
            outside[n] = (~protected[n])[:, :, None, None].expand_as(m).clone()
        else:
            outside[n] = torch.ones_like(m)
    changes = {"compensated_in_layer": 0}
    remainder = 0
    for name in list(weights):
        delta = int(masks[name].sum()) - kept_before[name]
        done = rebalance({name: weights[name]}, masks, {name: outside[name]}, delta, rewind=rewind, gen=gen)
        changes["compensated_in_layer"] += done
        remainder += delta - done if delta > 0 else delta + done
    if remainder:
        for n in masks:
            if n not in weights:
                weights[n] = params[n].detach().cpu().clone()
        done = rebalance(weights, masks, outside, remainder, rewind=rewind, gen=gen)
        if done != abs(remainder):
            raise SignatureError(
                "Not enough room outside the signature to keep the number of kept weights unchanged: the model "
                "looks dense (nothing pruned) or fully pruned. Prune it first (model.prune_ or find-ticket).")
        changes["compensated_elsewhere"] = done
        logger.warning("Some signed layers had no room to keep their own kept count; %d weights were rebalanced in "
                       "other layers (smallest magnitudes / largest rewind values). The total is unchanged.", done)
    return changes
