"""Estimating the scales a thief applied: per channel (ReLU-compensated) and per convolution row (batch-norm-compensated).

For a convolution ``P`` writing space ``X`` and reading space ``I``, an aligned suspect
holds ``W_s[r, c] = alpha_P[r] * W_ref[r, c] / lambda_I[c]`` at the kept positions:
``alpha_P`` is the row scale of a batch-norm-compensated rescaling, ``lambda_I`` the
activation scale of the input channels (a ReLU-compensated rescaling divides the
consumers' columns by it). The row scale is the ratio of the row's norms over the
reference's kept positions, input scales undone; the activation scale of ``X`` follows
from every batch norm after a producer: the suspect's normalised pre-activation
``a_s * (W_s x_s) + b_s`` equals ``lambda_X`` times the reference's, so
``lambda_X = a_s * alpha / a_ref = b_s / b_ref`` (``a = gamma / sqrt(var + eps)``,
``b = beta - a * mean``). The median of all estimates is taken.
"""

from __future__ import annotations

import math

import torch

from ..spaces import ChannelSpace
from .state import AlignerState

__all__ = ["row_scales", "space_scale", "finalize_scales"]


def row_scales(al: AlignerState, conv: str, space: ChannelSpace) -> torch.Tensor:
    """Row scale of every reference row of ``conv``; NaN where it cannot be told (no kept weight, no suspect row)."""
    st = al.done[space.name]
    source = al.dims[conv][1]
    w = al.rows(al.cols(al.sd[conv], source, undo=False), space.name).float()
    if conv in al.ref.masks and not al.exact:  # an exact copy has no weight outside the mask
        w = torch.where(al.ref.masks[conv], w, 0.0)
    sq = w.square()
    sq = sq.sum(dim=tuple(range(2, sq.dim())), dtype=torch.float64) if sq.dim() > 2 else sq.double()
    lam = al.done[source].scale.double()
    own = (sq @ lam.square()).sqrt()
    ref = al.ref.row_norms[conv].double()
    ok = (st.mapping >= 0) & (own > 0) & (ref > 0)
    return torch.where(ok, own / ref.clamp(min=1e-300), torch.full_like(own, math.nan))


def space_scale(al: AlignerState, space: ChannelSpace) -> torch.Tensor:
    """Activation scale of every reference channel of ``space`` (1 where nothing tells).

    Uses the producers whose input space comes before ``space`` (their input scales are
    known); their row scales are kept in ``al.alpha``.
    """
    st = al.done[space.name]
    logs: list[torch.Tensor] = []
    s_idx = st.mapping.clamp(min=0)
    for conv, norm in space.norms:
        source = al.dims[conv][1]
        if source not in al.done or al.order[source] >= al.order[space.name]:
            continue
        alpha = row_scales(al, conv, space)
        al.alpha[conv] = alpha
        a_ref, b_ref = al.bn(al.ref.tensors, norm)
        a_sus, b_sus = (v.index_select(0, s_idx) for v in al.bn(al.sd, norm))
        est_a = a_sus * alpha / a_ref
        big = b_ref.abs() > 1e-4 * float(b_ref.abs().max().clamp(min=1e-30))
        est_b = torch.where(big, b_sus / b_ref, torch.full_like(b_ref, math.nan))
        for est in (est_a, est_b):
            logs.append(torch.where(torch.isfinite(est) & (est > 0), est.log(), torch.full_like(est, math.nan)))
    scale = torch.ones(space.size, dtype=torch.float64)
    if logs:
        med = torch.stack(logs, 1).nanmedian(dim=1).values
        scale = torch.where(torch.isfinite(med), med.exp(), scale)
    return torch.where(st.mapping >= 0, scale, torch.ones_like(scale))


def finalize_scales(al: AlignerState, dirty: set[str]) -> dict[str, torch.Tensor]:
    """Final activation scales (forward order, for spaces whose inputs changed) and every convolution's row scales.

    Args:
        al: The aligner, every space solved.
        dirty: Spaces whose mapping changed since their scale was estimated (all, for a
            fresh alignment); spaces downstream of them are re-estimated too.

    Returns:
        Row scales by convolution weight, NaN filled from the batch norms
        (``alpha = lambda_X * a_ref / a_sus``) or with 1.
    """
    dirty = set(dirty)
    for space in al.spaces:
        if space.fixed:
            continue
        inputs = {al.dims[c][1] for c in space.producer_convs}
        if space.name in dirty or inputs & dirty:
            for conv in space.producer_convs:
                al.alpha.pop(conv, None)
            before = al.done[space.name].scale
            al.done[space.name].scale = space_scale(al, space)
            if space.name not in dirty and not torch.allclose(before, al.done[space.name].scale, rtol=1e-6):
                dirty.add(space.name)
    out = {}
    for space in al.spaces:
        st = al.done[space.name]
        for conv, norm in space.norms:
            alpha = al.alpha.get(conv)
            if alpha is None:
                alpha = row_scales(al, conv, space)
            missing = ~torch.isfinite(alpha)
            if bool(missing.any()):  # no kept weight in the row: from the batch norm
                a_ref, _ = al.bn(al.ref.tensors, norm)
                a_sus = al.bn(al.sd, norm)[0].index_select(0, st.mapping.clamp(min=0))
                est = st.scale * a_ref / a_sus
                est = torch.where(torch.isfinite(est) & (est > 0) & (st.mapping >= 0), est, torch.ones_like(est))
                alpha = torch.where(missing, est, alpha)
            out[conv] = alpha
    return out
