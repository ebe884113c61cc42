"""Exact tail probabilities for the verification verdicts.

Every number a verdict rests on is a p-value under an explicit null model:

* QR modules (Scheme V2): an unrelated mask of the same density switches each kernel on
  independently with probability ``q``; agreeing with a target bit ``b`` then has
  probability ``q`` when ``b = 1`` and ``1 − q`` when ``b = 0``, so the number of agreeing
  data modules is a sum of binomials, one pair per layer
  (:func:`hf_lottery_verify.signature.extract.agreement_p_value`, built on :func:`binomial_log_pmf`).
* Trigger sets (Scheme V3): an unrelated model matches a random label with probability
  ``1/C`` (:func:`binomial_tail`).

Tails are computed exactly in log space (no normal approximation), so p-values down to
1e-300 stay meaningful.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "binomial_log_pmf",
    "binomial_tail",
    "binomial_threshold",
    "trigger_p_value",
]


def binomial_log_pmf(n: int, p: float) -> np.ndarray:
    """``log P(X = k)`` for ``k = 0..n`` with ``X ~ Binomial(n, p)``.

    Args:
        n: Number of trials.
        p: Success probability.

    Returns:
        Array of ``n + 1`` log-probabilities (``-inf`` where the probability is 0).
    """
    k = np.arange(n + 1, dtype=np.float64)
    log_comb = math.lgamma(n + 1) - np.array([math.lgamma(x + 1) + math.lgamma(n - x + 1) for x in k])
    with np.errstate(divide="ignore"):
        lp, lq = (np.log(p) if p > 0 else -np.inf), (np.log1p(-p) if p < 1 else -np.inf)
        out = log_comb + np.where(k > 0, k * lp, 0.0) + np.where(k < n, (n - k) * lq, 0.0)
    return out


def _log_tail(log_pmf: np.ndarray, k: int) -> float:
    """``log P(X >= k)`` from a log-pmf."""
    if k <= 0:
        return 0.0
    if k >= len(log_pmf):
        return -math.inf
    tail = log_pmf[k:]
    m = np.max(tail)
    if not np.isfinite(m):
        return -math.inf
    return float(m + np.log(np.sum(np.exp(tail - m))))


def binomial_tail(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)`` (exact).

    Args:
        k: Observed successes.
        n: Trials.
        p: Success probability under the null.

    Returns:
        The one-sided p-value.

    Example:
        >>> round(binomial_tail(21, 100, 0.1), 6) < 1e-3   # 21 of 100 trigger labels at 10 classes
        True
    """
    if not 0 <= p <= 1:
        raise ValueError(f"p must lie in [0, 1], got {p}.")
    return math.exp(_log_tail(binomial_log_pmf(n, p), k))


def binomial_threshold(n: int, p: float, alpha: float) -> int:
    """Smallest ``k`` with ``P(X >= k) <= alpha`` for ``X ~ Binomial(n, p)``.

    It is the number of successes a test at level ``alpha`` needs; the decision
    ``binomial_tail(k, n, p) <= alpha`` holds exactly when ``k >= binomial_threshold(n, p, alpha)``,
    because both use the same exact tail. When even ``k = n`` is not rare enough the
    threshold is ``n + 1`` (no outcome is significant).

    Args:
        n (`int`): Trials (e.g. trigger images).
        p (`float`): Success probability under the null (``1 / num_classes`` for triggers).
        alpha (`float`): Significance level, in ``(0, 1]``.

    Returns:
        The threshold, in ``[0, n + 1]``.

    Raises:
        ValueError: ``n`` is negative, ``p`` outside ``[0, 1]`` or ``alpha`` outside ``(0, 1]``.

    Example:
        >>> [binomial_threshold(100, 0.1, a) for a in (1e-3, 1e-6, 1e-9)]
        [21, 28, 33]
    """
    if n < 0:
        raise ValueError(f"n must be 0 or more, got {n}.")
    if not 0 <= p <= 1:
        raise ValueError(f"p must lie in [0, 1], got {p}.")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}.")
    # binary search on the monotone tail; the same function the p-values come from
    lo, hi = 0, n + 1  # P(X >= n + 1) = 0 <= alpha always holds
    while lo < hi:
        mid = (lo + hi) // 2
        if binomial_tail(mid, n, p) <= alpha:
            hi = mid
        else:
            lo = mid + 1
    return lo


def trigger_p_value(matches: int, n: int, num_classes: int) -> float:
    """P-value of ``matches`` correct trigger labels out of ``n`` under the chance null.

    An unrelated model answers a trigger image whose label was drawn uniformly at random
    correctly with probability ``1 / num_classes``, independently per image (the labels are
    random, whatever the model answers), so ``matches ~ Binomial(n, 1 / num_classes)``.

    Args:
        matches (`int`): Trigger images answered with their trigger label.
        n (`int`): Trigger images in the set (unanswered ones included).
        num_classes (`int`): Classes the trigger labels were drawn from.

    Returns:
        ``P(X >= matches)``, exact.

    Raises:
        ValueError: ``num_classes < 1`` or ``matches`` outside ``[0, n]``.

    Example:
        >>> trigger_p_value(28, 100, 10) < 1e-6
        True
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be 1 or more, got {num_classes}.")
    if not 0 <= matches <= n:
        raise ValueError(f"matches must lie in [0, n={n}], got {matches}.")
    return binomial_tail(matches, n, 1.0 / num_classes)
