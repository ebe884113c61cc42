"""How well a suspect channel matches a reference channel: scale-invariant scores of weight rows.

One piece of :class:`Evidence` is a tensor that indexes a channel space along one
dimension (a producer's output rows, or a consumer's input columns turned into rows),
with every other dimension already in the reference's coordinates (gathered through
the mappings of the spaces aligned before, their scales undone). It compares each
suspect row with each reference row:

* a *sparse* reference row (a masked weight) by the share of the suspect row's L1 mass
  that falls on the reference row's kept positions, plus a coverage term (the share of
  the kept positions where the suspect row has a weight of its own), so that the right
  pair scores ≈1 for the stolen ticket, a further-pruned one and a densified one, and a
  wrong pair ≈ the layer's density;
* a *dense* reference row (the stem, a small classifier) by cosine similarity.

Rows empty on both sides agree weakly (they carry no information); a row empty on one
side only disagrees. All scores lie in ``[0, 1]`` and ignore positive row scales.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from ..spaces import ChannelSpace
    from .result import SpaceAlignment

__all__ = ["Evidence", "pair_scores", "matrix_scores", "fingerprint_scores", "SHARE_WEIGHT", "EMPTY_AGREEMENT"]

SHARE_WEIGHT = 0.8
"""Weight of the mass share in a sparse score (the rest is coverage)."""
EMPTY_AGREEMENT = 0.25
"""Weight, in the assignment score, of two rows that are both empty (they agree, but say little)."""
PRESENT = 1e-2
"""A suspect entry counts as present (for coverage) above this share of its row's largest magnitude."""


@dataclass
class Evidence:
    """Suspect rows against reference rows of one tensor.

    Attributes:
        label: Name of the tensor (for notes).
        suspect: ``(n_suspect, D)`` suspect rows, reference coordinates along ``D``.
        mask: ``(n_reference, D)`` kept positions of a sparse reference (or ``None``).
        dense: ``(n_reference, D)`` values of a dense reference (or ``None``).
    """

    label: str
    suspect: torch.Tensor
    mask: torch.Tensor | None = None
    dense: torch.Tensor | None = None

    @property
    def n_reference(self) -> int:
        ref = self.mask if self.mask is not None else self.dense
        return int(ref.shape[0])  # type: ignore[union-attr]

    def subset(self, reference_rows: torch.Tensor, suspect_rows: torch.Tensor) -> Evidence:
        """The same evidence for some reference and suspect rows only."""
        return Evidence(self.label, self.suspect.index_select(0, suspect_rows),
                        mask=None if self.mask is None else self.mask.index_select(0, reference_rows),
                        dense=None if self.dense is None else self.dense.index_select(0, reference_rows))


def _combine(q: torch.Tensor, s_empty: torch.Tensor, r_empty: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores with the empty-row conventions, the assignment weights and the report weights."""
    both = s_empty & r_empty
    one = s_empty ^ r_empty
    q = torch.where(both, torch.ones_like(q), torch.where(one, torch.zeros_like(q), q))
    w_assign = torch.where(both, torch.full_like(q, EMPTY_AGREEMENT), torch.ones_like(q))
    w_report = (~r_empty).to(q.dtype).expand_as(q)
    return q, w_assign, w_report


def _sparse_pairs(ev: Evidence, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, ...]:
    a = ev.suspect.index_select(0, cols).abs().float()
    m = ev.mask.index_select(0, rows)  # type: ignore[union-attr]
    mass = a.sum(1)
    on = torch.where(m, a, 0.0).sum(1)
    present = a > PRESENT * a.amax(1, keepdim=True)
    kept = m.sum(1)
    cover = (present & m).sum(1).float() / kept.clamp(min=1)
    q = SHARE_WEIGHT * on / mass.clamp(min=1e-30) + (1 - SHARE_WEIGHT) * cover
    return _combine(q, mass <= 0, kept == 0)


def _dense_pairs(ev: Evidence, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, ...]:
    s = ev.suspect.index_select(0, cols).float()
    r = ev.dense.index_select(0, rows).float()  # type: ignore[union-attr]
    ns, nr = s.norm(dim=1), r.norm(dim=1)
    q = ((s * r).sum(1) / (ns * nr).clamp(min=1e-30)).clamp(0.0, 1.0)
    return _combine(q, ns <= 0, nr <= 0)


def pair_scores(evidence: Sequence[Evidence], rows: torch.Tensor, cols: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores of chosen pairs only (reference ``rows[i]`` with suspect ``cols[i]``): ``O(entries)``.

    Returns:
        ``(assign, report, report_weight)``: the assignment score of each pair (empty rows
        agreeing weakly), the reported similarity (over evidence where the reference row is
        non-empty; 0 without any) and how much such evidence there was.
    """
    num_a = den_a = num_r = den_r = torch.zeros(rows.numel())
    for ev in evidence:
        q, wa, wr = (_sparse_pairs if ev.mask is not None else _dense_pairs)(ev, rows, cols)
        num_a, den_a = num_a + wa * q, den_a + wa
        num_r, den_r = num_r + wr * q, den_r + wr
    return num_a / den_a.clamp(min=1e-30), num_r / den_r.clamp(min=1e-30), den_r


def _sparse_product(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``mask.float() @ values.T`` for a sparse boolean ``mask`` (``n_ref × D``) and dense ``values`` (``n × D``)."""
    rows, cols = mask.nonzero(as_tuple=True)
    if rows.numel() == 0:
        return values.new_zeros(mask.shape[0], values.shape[0])
    if rows.numel() * 8 > mask.numel():  # not sparse enough to pay off
        return mask.to(values.dtype) @ values.T
    sparse = torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.ones(rows.numel(), dtype=values.dtype),
                                     tuple(mask.shape), is_coalesced=True, check_invariants=False)
    return torch.sparse.mm(sparse, values.T.contiguous())


def _sparse_matrix(ev: Evidence) -> tuple[torch.Tensor, ...]:
    a = ev.suspect.float().abs()
    mask = ev.mask
    mass = a.sum(1)
    kept = mask.sum(1)  # type: ignore[union-attr]
    on = _sparse_product(mask, a)  # type: ignore[arg-type]
    present = (a > PRESENT * a.amax(1, keepdim=True)).float()
    cover = _sparse_product(mask, present) / kept.clamp(min=1)[:, None]  # type: ignore[arg-type]
    q = SHARE_WEIGHT * on / mass.clamp(min=1e-30)[None, :] + (1 - SHARE_WEIGHT) * cover
    return _combine(q, (mass <= 0)[None, :], (kept == 0)[:, None])


def _dense_matrix(ev: Evidence) -> tuple[torch.Tensor, ...]:
    s = ev.suspect.float()
    r = ev.dense.float()  # type: ignore[union-attr]
    ns, nr = s.norm(dim=1), r.norm(dim=1)
    q = ((r / nr.clamp(min=1e-30)[:, None]) @ (s / ns.clamp(min=1e-30)[:, None]).T).clamp(0.0, 1.0)
    return _combine(q, (ns <= 0)[None, :], (nr <= 0)[:, None])


def matrix_scores(evidence: Sequence[Evidence], n_reference: int, n_suspect: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores of every (reference channel, suspect channel) pair.

    Returns:
        ``(assign, report, report_weight)``, each ``n_reference × n_suspect`` (see :func:`pair_scores`).
    """
    num_a = torch.zeros(n_reference, n_suspect)
    den_a, num_r, den_r = num_a.clone(), num_a.clone(), num_a.clone()
    for ev in evidence:
        q, wa, wr = (_sparse_matrix if ev.mask is not None else _dense_matrix)(ev)
        num_a += wa * q
        den_a += wa
        num_r += wr * q
        den_r += wr
    return num_a / den_a.clamp(min=1e-30), num_r / den_r.clamp(min=1e-30), den_r


def fingerprint_scores(reference: torch.Tensor, suspect: torch.Tensor, *, spread: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """Similarity in ``[0, 1]`` of scale-invariant batch norm fingerprints (``n_ref × F`` vs ``n_sus × F``).

    Args:
        reference: Fingerprints of reference channels.
        suspect: Fingerprints of suspect channels.
        spread (`torch.Tensor`, *optional*): Each feature's spread over all of the space's
            reference channels (defaults to the spread over ``reference``). Features that do
            not vary carry no information and are skipped (all ones when none varies).
    """
    if spread is None:
        spread = reference.std(dim=0) if reference.shape[0] > 1 else torch.zeros(reference.shape[1])
    useful = spread > 1e-6
    if not bool(useful.any()):
        return torch.ones(reference.shape[0], suspect.shape[0])
    r, s, tau = reference[:, useful], suspect[:, useful], 0.1 * spread[useful]
    distance = torch.zeros(reference.shape[0], suspect.shape[0])
    for f in range(r.shape[1]):
        distance += (r[:, f, None] - s[None, :, f]).abs() / tau[f]
    return torch.exp(-distance / r.shape[1])


# --------------------------------------------------------------------------- reading score matrices


def without_copies(total: torch.Tensor, st: SpaceAlignment) -> torch.Tensor:
    """``total`` with each folded copy ruled out as a rival of the channel it was folded into."""
    if not st.folded:
        return total
    total = total.clone()
    for e, (r, _) in st.folded.items():
        total[r, e] = -math.inf
    return total


def at_mapping(matrix: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
    """``matrix[r, mapping[r]]`` (0 where unmatched)."""
    valid = mapping >= 0
    out = torch.zeros(mapping.numel(), dtype=matrix.dtype)
    out[valid] = matrix[torch.arange(mapping.numel())[valid], mapping[valid]]
    return out


def rivals(total: torch.Tensor, mapping: torch.Tensor, rows: torch.Tensor, *, ambiguity: float) -> torch.Tensor:
    """Rows whose chosen column has a rival within ``ambiguity``."""
    if total.shape[1] < 2:
        return torch.zeros(rows.numel(), dtype=torch.bool)
    valid = mapping >= 0
    picked = at_mapping(total, mapping)
    others = total.clone()
    others[rows[valid], mapping[valid]] = -math.inf
    return valid & (others.max(dim=1).values >= picked - ambiguity)


def forced_rows(space: ChannelSpace, forced: Mapping[int, int], n: int) -> torch.Tensor:
    """Reference channels whose match is forced (a zero-padding shortcut's injected channels)."""
    out = torch.zeros(n, dtype=torch.bool)
    if forced:
        out[torch.tensor(list(forced))] = True
    return out


def weighted(values: torch.Tensor, weight: torch.Tensor) -> float:
    """Weighted mean (0 without weight)."""
    total = float(weight.sum())
    return float((values.double() * weight).sum() / total) if total > 0 else 0.0


def mean(values: torch.Tensor, weight: torch.Tensor) -> float:
    """Mean over the entries with positive ``weight`` (0 without any)."""
    has = weight > 0
    return float(values[has].mean()) if bool(has.any()) else 0.0


def off_mean(report: torch.Tensor, weight: torch.Tensor, r_idx: torch.Tensor, s_idx: torch.Tensor) -> float:
    """Mean of ``report`` over the pairs with evidence other than the chosen ones: the similarity of wrong pairs."""
    has = (weight > 0).clone()
    has[r_idx, s_idx] = False
    return float(report[has].mean()) if bool(has.any()) else 0.0
