"""The evidence a channel space is matched on: producer rows and consumer columns in the reference's coordinates.

A producer's rows are read with their input columns gathered through the input space's
mapping (duplicates folded, input scales undone); a consumer's columns with its rows
gathered through its output space's mapping (row scales undone) and turned into rows.
Reference channels still undecided in a space are left out of the evidence read through
it. A densified suspect's rows lose their noise first (entries near the fitted noise floor,
:func:`~hf_lottery_verify.recovery.noise_floor_scores`, become zeros).
"""

from __future__ import annotations

import math

import torch

from ..recovery import noise_floor_scores
from ..spaces import ChannelSpace
from .reference import Reference
from .result import SpaceAlignment
from .scores import Evidence
from .state import AlignerState

__all__ = ["producer_evidence", "consumer_evidence", "fingerprints", "denoise", "evidence_weight", "has_evidence",
           "pattern_similarity"]

SPARSE_REFERENCE = 0.25
"""Densified suspects are cleaned only against references sparser than this."""
DENSIFIED = 0.5
"""A suspect tensor with more non-zero entries than this share counts as densified."""
ABOVE_FLOOR = math.log(8.0)
"""A densified suspect's entry counts as a weight when it stands this far (log) above the noise floor."""
RANDOM_PAIRS = 64
"""Random (wrong) pairs sampled per space to estimate the similarity of unrelated channels."""


def producer_evidence(al: AlignerState, space: ChannelSpace) -> list[Evidence]:
    """The rows of every producer of ``space`` whose input space is aligned (input columns in reference coordinates)."""
    out = []
    for conv in space.producer_convs:
        source = al.dims[conv][1]
        if source not in al.done or source == space.name:
            continue
        w = al.sd[conv].float()
        g = al.cols(w, source, undo=True)
        ref = al.ref.masks.get(conv, al.ref.tensors.get(conv))
        if ref is None:
            continue
        excluded = al.pending.get(source)
        if excluded is not None:
            g = g.clone() if g is w or g is al.sd[conv] else g
            g[:, excluded] = 0
            ref = ref.clone()
            ref[:, excluded] = 0
        n_ref, n_sus = space.size, g.shape[0]
        if conv in al.ref.masks:
            out.append(Evidence(conv, denoise(g, ref).reshape(n_sus, -1), mask=ref.reshape(n_ref, -1)))
        else:
            out.append(Evidence(conv, g.reshape(n_sus, -1), dense=ref.reshape(n_ref, -1)))
    return out

def consumer_evidence(al: AlignerState, space: ChannelSpace) -> list[Evidence]:
    """The columns of every consumer of ``space`` whose output space is aligned, as rows (copies folded in)."""
    out = []
    for name in space.consumers:
        target = al.dims[name][0]
        ref = al.ref.masks.get(name, al.ref.tensors.get(name))
        if ref is None or (target is not None and target not in al.done):
            continue
        w = al.sd[name].float()
        w = al.rows(w, target) if target is not None else w
        ref_rows = al.ref.row_norms.get(name)
        if ref_rows is not None:  # undo the rows' own scales (they weigh the positions of a column)
            own = al.cols(w, space.name, undo=True).reshape(w.shape[0], -1).norm(dim=1)
            ok = (own > 0) & (ref_rows > 0)
            alpha = torch.where(ok, own / ref_rows.clamp(min=1e-30), torch.ones_like(own))
            w = w / alpha.reshape(-1, *([1] * (w.dim() - 1)))
        excluded = al.pending.get(target) if target is not None else None
        if excluded is not None:
            w = w.clone()
            w[excluded] = 0
            ref = ref.clone()
            ref[excluded] = 0
        g, ref = fold_rows(w.transpose(0, 1), al.done[space.name]), ref.transpose(0, 1)
        if name in al.ref.masks:
            out.append(Evidence(name, denoise(g, ref).reshape(g.shape[0], -1), mask=ref.reshape(space.size, -1)))
        else:
            out.append(Evidence(name, g.reshape(g.shape[0], -1), dense=ref.reshape(space.size, -1)))
    return out

def fingerprints(al: AlignerState, space: ChannelSpace) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Scale-invariant batch norm features (``running_mean / sqrt(running_var)``) of reference and suspect channels."""
    ref, sus = [], []
    for _, norm in space.norms:
        for source, out in ((al.ref.tensors, ref), (al.sd, sus)):
            mean, var = source[f"{norm}.running_mean"].double(), source[f"{norm}.running_var"].double()
            out.append((mean / torch.sqrt(var.clamp(min=0) + al.eps.get(norm, 1e-5))).float())
    return (torch.stack(ref, 1), torch.stack(sus, 1)) if ref else None


def denoise(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A densified suspect's rows without their noise (entries near the fitted noise floor become 0).

    ``values`` is ``(rows, groups, ...)`` with the groups (input channels) along dim 1. Left
    as is unless it is mostly non-zero while the reference is sparse.
    """
    share = float(mask.float().mean())
    if share >= SPARSE_REFERENCE or float((values != 0).float().mean()) <= DENSIFIED:
        return values
    return torch.where(noise_floor_scores(values, kept=share) > ABOVE_FLOOR, values, torch.zeros_like(values))


def evidence_weight(ref: Reference, space: ChannelSpace) -> torch.Tensor:
    """How much there is to compare for each reference channel of ``space``: its kept weights (producer rows and
    consumer columns; every entry of a dense one). A channel with one kept weight matches some unrelated channel by
    chance; one with twenty does not, so similarities are averaged with these weights."""
    weight = torch.zeros(space.size, dtype=torch.float64)
    for name in space.producer_convs:
        if name in ref.masks:
            weight += ref.kept_per_row[name].double()
        else:
            weight += (ref.row_norms[name] > 0).double() * math.prod(ref.shapes[name][1:])
    for name in space.consumers:
        if name in ref.masks:
            weight += ref.kept_per_column[name].double()
        else:
            shape = ref.shapes[name]
            weight += (ref.col_norms[name] > 0).double() * shape[0] * math.prod(shape[2:])
    return weight


def has_evidence(ref: Reference, space: ChannelSpace) -> torch.Tensor:
    """Reference channels of ``space`` with a kept weight in some producer row or consumer column."""
    return evidence_weight(ref, space) > 0


def pattern_similarity(ref: Reference, space: ChannelSpace) -> float:
    """Similarity of random pairs when the suspect has the reference's patterns (sampled rows of the masked producers)."""
    n = space.size
    if n < 2:
        return 0.0
    rows = torch.arange(0, n, max(1, n // RANDOM_PAIRS))
    other = (rows + n // 2 + 1) % n if n > 2 else (rows + 1) % n
    values = []
    for name in space.producer_convs:
        if name not in ref.masks:
            continue
        m = ref.masks[name].reshape(n, -1)
        a, b = m.index_select(0, rows), m.index_select(0, other)
        inter = (a & b).sum(1).double()
        ka, kb = a.sum(1).double(), b.sum(1).double()
        both = (ka > 0) & (kb > 0)
        q = 0.8 * inter / kb.clamp(min=1) + 0.2 * inter / ka.clamp(min=1)
        values.append(q[both])
    values = [v for v in values if v.numel()]
    return float(torch.cat(values).mean()) if values else 0.0


def fold_rows(g: torch.Tensor, st: SpaceAlignment) -> torch.Tensor:
    """Suspect rows (channels of ``st``'s space) with each folded copy added to its original, times its multiple."""
    pairs = [(e, int(st.mapping[r]), m) for e, (r, m) in st.folded.items() if int(st.mapping[r]) >= 0]
    if not pairs:
        return g
    g = g.clone()
    src = torch.tensor([e for e, _, _ in pairs])
    dst = torch.tensor([c for _, c, _ in pairs])
    mult = torch.tensor([m for _, _, m in pairs], dtype=g.dtype).reshape(-1, *([1] * (g.dim() - 1)))
    return g.index_add_(0, dst, g.index_select(0, src) * mult)
