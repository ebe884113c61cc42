"""Combining the copies of a signature into one word for the decoder (both codings).

Each function takes the copies' reads and returns candidate ``(how, bits, erasures,
reliability)`` words, in the order the decoder tries them; a decode is evidence only when it
yields the key's exact text, so trying several candidates costs nothing in false claims.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["combine_copies", "combine_pairs", "pair_error_rate"]


def combine_copies(kept: np.ndarray, stream: np.ndarray, valid: np.ndarray | None = None
                   ) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Candidate data bits from one or more copies, for the attack models in turn.

    Copy ``c`` claims data bit ``kept[c] ^ stream[c]``. Pruning attacks only turn kept
    kernels into pruned ones, so a *kept* read is reliable and a pruned one is not
    (``any``: one kept read outweighs every pruned read); add-on noise the opposite
    (``all``); ``majority`` weighs every copy the same; ``erasures`` takes ``any``'s bits and
    erases every module on which the copies disagree; ``copy<c>`` reads copy ``c`` alone (when
    an attack destroyed the others). Ties become erasures. With identical
    streams (the ``regions`` layout) ``any`` is exactly "kept in any copy".

    Args:
        kept (`np.ndarray`): ``(copies, n)`` boolean kernel reads.
        stream (`np.ndarray`): ``(copies, n)`` whitening bits.
        valid (`np.ndarray`, *optional*): ``(copies, n)``: reads that count (a function-free
            kernel's read does not: it abstains); all by default.

    Returns:
        ``(how, bits, erasures, reliability)`` candidates, in the order to try them.
    """
    votes = kept ^ stream
    copies, n = votes.shape
    ok = np.ones(votes.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if copies == 1:
        return [("single", votes[0], ~ok[0], ok[0].astype(float))]
    strong = copies + 1

    def vote(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        weight = weight * ok
        w1, w0 = (weight * votes).sum(axis=0), (weight * ~votes).sum(axis=0)
        return w1 > w0, w1 == w0, np.abs(w1 - w0).astype(float)

    out = []
    for how, weight in (("any", np.where(kept, strong, 1)), ("majority", np.ones(votes.shape, dtype=int)),
                        ("all", np.where(kept, 1, strong))):
        bits, tie, rel = vote(weight)
        out.append((how, bits, tie, rel))
    disagree = (votes & ok).any(axis=0) & (~votes & ok).any(axis=0) | ~ok.any(axis=0)
    out.append(("erasures", out[0][1], disagree, np.where(disagree, 0.0, 1.0)))
    # each copy alone: survives an attack that destroyed the other copies outright
    out += [(f"copy{c}", votes[c], ~ok[c], ok[c].astype(float)) for c in range(copies)]
    return out


def pair_error_rate(kept: np.ndarray, valid: np.ndarray) -> float:
    """Estimated share of a pair-coded copy's *intact* pairs that read the wrong bit.

    Models an attack as independent kernel flips, kept → pruned at rate ``r1`` and pruned →
    kept at ``r0``: a pair breaks both-pruned at ``r1 (1 − r0)``, both-kept at ``r0 (1 − r1)``,
    and swaps (an undetectable wrong bit) at ``r1 r0``. The two broken shares observed give
    ``r1`` and ``r0``; pruning alone (``r0 = 0``) leaves every intact pair right.

    Args:
        kept (`np.ndarray`): ``(n,)`` first-kernel reads.
        valid (`np.ndarray`): ``(n,)`` intact pairs.

    Returns:
        The estimated error rate among intact pairs, in ``[1e-4, 0.5]``.
    """
    n = max(1, kept.size)
    b1 = float((~valid & ~kept).sum()) / n  # both pruned
    b0 = float((~valid & kept).sum()) / n  # both kept (the first kernel is kept)
    d = b1 - b0
    disc = (1 - d) ** 2 - 4 * b0
    r0 = ((1 - d) - math.sqrt(disc)) / 2 if disc > 0 else (1 - d) / 2
    r0 = min(max(r0, 0.0), 0.5)
    r1 = min(max(r0 + d, 0.0), 0.5)
    swap, clean = r1 * r0, (1 - r1) * (1 - r0)
    return min(max(swap / (swap + clean) if swap + clean > 0 else 0.5, 1e-4), 0.5)


def _llr(eps: float) -> float:
    eps = min(max(eps, 1e-4), 0.5)
    return math.log((1 - eps) / eps)


def combine_pairs(kept: np.ndarray, stream: np.ndarray, valid: np.ndarray, fullness: np.ndarray | None = None,
                  paired: np.ndarray | None = None) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Candidate data bits from pair-coded copies (and single-coded ones beside them).

    Each intact pair votes for its bit (``kept ^ stream``), a broken pair (both kernels kept
    or both pruned) abstains. ``weighted``: a pair-coded copy's vote counts its log-likelihood
    ratio ``log((1 − ε) / ε)``, with ``ε`` its estimated error rate (:func:`pair_error_rate`),
    so a copy an attack mostly wrote over counts little; a single-coded copy (no erasures to
    learn from) gets one error rate for its kept reads and one for its pruned reads, measured
    against the confident pair consensus (pruning makes pruned reads unreliable, add-on noise
    kept ones). ``pairs``: one vote per copy. The bit is the sign of the sum, an erasure where
    it is zero, and the reliability its size. ``fullness`` (with ``fullness``): every kernel of
    the owner's pairs that is kept holds at least ``module_weights`` weights, and retraining
    under the fixed mask keeps it so, while a kernel that add-on noise, another signature or its
    count restoration switched on usually holds one; each pair votes ``f_a − f_b`` (a kernel's
    kept weights over ``module_weights``, capped at 1), so a both-kept pair still votes for the
    fuller kernel and a pair kept on a one-weight kernel votes only half — ``fullness`` weighted
    as ``weighted`` and ``fullness-flat`` with one vote per copy. Then each copy alone (its broken
    pairs erased), for an attack that wrote over the other copies.

    Args:
        kept (`np.ndarray`): ``(copies, n)`` first-kernel reads (the kernel, for single copies).
        stream (`np.ndarray`): ``(copies, n)`` whitening bits.
        valid (`np.ndarray`): ``(copies, n)`` intact pairs (all ``True`` for single copies).
        fullness (`np.ndarray`, *optional*): ``(copies, n)`` ``f_a − f_b`` in ``[−1, 1]``
            (ignored for single copies).
        paired (`np.ndarray`, *optional*): ``(copies,)`` which copies are pair-coded (all, by default).

    Returns:
        ``(how, bits, erasures, reliability)`` candidates, in the order to try them.
    """
    copies, n = kept.shape
    paired = np.ones(copies, dtype=bool) if paired is None else np.asarray(paired, dtype=bool)
    votes = np.where(valid, np.where(kept ^ stream, 1.0, -1.0), 0.0)
    weights = np.zeros((copies, n))
    for c in np.flatnonzero(paired):
        weights[c] = _llr(pair_error_rate(kept[c], valid[c]))
    consensus = (votes * weights).sum(axis=0)
    sure = np.abs(consensus) > 0
    for c in np.flatnonzero(~paired):
        for read in (True, False):
            where = kept[c] == read
            ref = where & sure & valid[c]
            eps = float(((votes[c] > 0) != (consensus > 0))[ref].mean()) if ref.sum() >= 16 else 0.25
            weights[c, where] = _llr(eps)
    scores = [("weighted", (votes * weights).sum(axis=0)), ("pairs", votes.sum(axis=0))]
    if fullness is not None and paired.any():
        polarity = np.where(stream, -1.0, 1.0)  # the first kernel kept means bit 1 ^ stream
        soft = np.where(paired[:, None], fullness * polarity, votes)
        scores += [("fullness", (soft * weights).sum(axis=0)), ("fullness-flat", soft.sum(axis=0))]
    out = [(how, score > 0, np.isclose(score, 0.0), np.abs(score)) for how, score in scores]
    if copies > 1:
        out += [(f"copy{c}", votes[c] > 0, votes[c] == 0, np.abs(votes[c])) for c in range(copies)]
    return out
