"""Extra suspect channels (a widened suspect): fold duplicates into their originals, drop what nobody reads.

A thief widens a space with *duplicates* (a copy of a channel's producer rows and batch
norm entries, its consumers' columns split between original and copy) or *dummies*
(random producer rows, zero consumer columns). Two channels compute proportional
activations when, for every producer, their batch-norm-folded rows ``a * W[row]`` and
offsets ``b`` are proportional with one positive factor ``m``; the copy's consumer
columns then fold into the original's, times ``m``. Rows are compared with their input
columns folded (the input space's own duplicates added up), since the thief split those
columns too. A dead channel's activation is a constant (its rows are empty), so all dead
channels are proportional; among several candidates the one whose consumers read the
same positions wins.
"""

from __future__ import annotations

import math

import torch

from ..spaces import ChannelSpace
from .result import SpaceAlignment
from .state import AlignerState

__all__ = ["DUPLICATE_COSINE", "resolve_extras"]

DUPLICATE_COSINE = 0.999
"""Cosine above which an extra channel's folded producer rows count as a duplicate's."""


def _effective_rows(al: AlignerState, space: ChannelSpace) -> torch.Tensor:
    parts = []
    for conv, norm in space.norms:
        source = al.dims[conv][1]
        if source not in al.done or source == space.name:
            continue
        a, b = al.bn(al.sd, norm)
        w = al.cols(al.sd[conv].double(), source, undo=False)
        parts += [a[:, None] * w.reshape(w.shape[0], -1), b[:, None]]
    return torch.cat(parts, 1)


def _support_agreement(al: AlignerState, space: ChannelSpace, channel: int, others: torch.Tensor) -> torch.Tensor:
    own = torch.cat([(al.sd[n][:, channel] != 0).reshape(-1) for n in space.consumers])
    theirs = torch.cat([(al.sd[n][:, others] != 0).transpose(0, 1).reshape(others.numel(), -1)
                        for n in space.consumers], 1)
    return (theirs & own).sum(1).double() / (theirs | own).sum(1).double().clamp(min=1)


def _unread(al: AlignerState, space: ChannelSpace, channel: int) -> bool:
    return all(not bool(al.sd[name][:, channel].ne(0).any()) for name in space.consumers)


def resolve_extras(al: AlignerState, space: ChannelSpace, st: SpaceAlignment) -> None:
    """Fill ``st.extra``, ``st.folded`` and ``st.dropped`` (and notes for extras that change the function)."""
    used = set(st.mapping[st.mapping >= 0].tolist())
    st.extra = [s for s in range(st.suspect_size) if s not in used]
    st.folded, st.dropped = {}, []
    st.notes = [n for n in st.notes if not n.startswith("extra channel")]
    if not st.extra:
        return
    owner = {int(s): r for r, s in enumerate(st.mapping.tolist()) if s >= 0}
    vectors = _effective_rows(al, space)
    norms = vectors.norm(dim=1).clamp(min=1e-300)
    inj = space.injection
    src = al.done[inj.source] if inj is not None else None
    n_src = al.sus[inj.source].size if inj is not None else 0

    def injected(s: int) -> bool:
        return inj is not None and inj.offset <= s < inj.offset + n_src

    candidates = torch.tensor(sorted(s for s in owner if not injected(s)), dtype=torch.long)
    for e in st.extra:
        target: int | None = None
        mult = 0.0
        if injected(e):  # the shortcut carries a channel of the source: follow the source's decision
            j = e - inj.offset  # type: ignore[union-attr]
            if j in src.folded:  # type: ignore[union-attr]
                r_src, m_src = src.folded[j]  # type: ignore[union-attr]
                r = inj.offset + r_src  # type: ignore[union-attr]
                c = int(st.mapping[r])
                cos = float(vectors[e] @ vectors[c] / (norms[e] * norms[c])) if c >= 0 else 0.0
                ratio = float(norms[e] / norms[c]) if c >= 0 else 0.0
                if cos >= DUPLICATE_COSINE and abs(math.log(max(ratio, 1e-300) / m_src)) < 1e-2:
                    target, mult = r, m_src
        elif candidates.numel():
            cos = vectors[candidates] @ vectors[e] / (norms[candidates] * norms[e])
            close = (cos >= DUPLICATE_COSINE).nonzero().flatten()
            if close.numel():
                pick = close[int(_support_agreement(al, space, e, candidates[close]).argmax())] \
                    if close.numel() > 1 else close[0]
                c = int(candidates[pick])
                target, mult = owner[c], float(vectors[e] @ vectors[c] / (norms[c] ** 2))
        if target is not None and mult > 0:
            st.folded[e] = (target, mult)
        else:
            st.dropped.append(e)
            if not _unread(al, space, e):
                st.notes.append(f"extra channel {e} is neither a duplicate nor unread; dropped (the aligned model no "
                                "longer computes exactly what the suspect computes)")
