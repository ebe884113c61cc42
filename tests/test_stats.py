from __future__ import annotations

import math

import numpy as np
import pytest

from hf_lottery_verify.signature.extract import agreement_p_value
from hf_lottery_verify.stats import binomial_log_pmf, binomial_tail, binomial_threshold, trigger_p_value


def test_binomial_pmf_sums_to_one_and_matches_math_comb() -> None:
    pmf = np.exp(binomial_log_pmf(20, 0.3))
    assert pmf.sum() == pytest.approx(1.0)
    assert pmf[7] == pytest.approx(math.comb(20, 7) * 0.3**7 * 0.7**13)


def test_binomial_tail_known_thresholds() -> None:
    # 100 trigger images, 10 classes: >= 21 matches is significant at 1e-3, >= 28 at 1e-6, >= 33 at 1e-9
    assert binomial_tail(21, 100, 0.1) < 1e-3 < binomial_tail(20, 100, 0.1)
    assert binomial_tail(28, 100, 0.1) < 1e-6 < binomial_tail(27, 100, 0.1)
    assert binomial_tail(33, 100, 0.1) < 1e-9 < binomial_tail(32, 100, 0.1)
    assert binomial_tail(0, 10, 0.5) == 1.0 and binomial_tail(11, 10, 0.5) == 0.0


def test_module_agreement_matches_brute_force_convolution() -> None:
    ones, zeros, q = 7, 9, 0.3
    dist = np.zeros(ones + zeros + 1)
    for a in range(ones + 1):
        for b in range(zeros + 1):
            dist[a + b] += math.comb(ones, a) * q**a * (1 - q) ** (ones - a) * math.comb(zeros, b) * (1 - q) ** b * q ** (
                zeros - b)
    for k in (0, 5, 10, 16):
        assert agreement_p_value(k, [(ones, zeros, q)]) == pytest.approx(dist[k:].sum(), rel=1e-9)


def test_module_agreement_is_tiny_for_a_perfect_match_and_large_for_chance() -> None:
    assert agreement_p_value(567, [(280, 287, 0.5)]) < 1e-150
    assert agreement_p_value(284, [(280, 287, 0.5)]) > 0.4


def test_binomial_threshold_for_100_triggers_over_10_classes() -> None:
    assert binomial_threshold(100, 0.1, 1e-3) == 21
    assert binomial_threshold(100, 0.1, 1e-6) == 28
    assert binomial_threshold(100, 0.1, 1e-9) == 33


@pytest.mark.parametrize(("n", "p", "alpha"), [(100, 0.1, 1e-6), (100, 0.01, 1e-9), (37, 0.5, 0.05), (1000, 0.1, 1e-12)])
def test_binomial_threshold_is_the_smallest_significant_count(n: int, p: float, alpha: float) -> None:
    k = binomial_threshold(n, p, alpha)
    assert binomial_tail(k, n, p) <= alpha < binomial_tail(k - 1, n, p)


def test_binomial_threshold_edges() -> None:
    assert binomial_threshold(10, 0.5, 1e-9) == 11  # even 10 of 10 is not rare enough: no count suffices
    assert binomial_threshold(10, 0.5, 1.0) == 0
    assert binomial_threshold(0, 0.1, 1e-3) == 1
    for bad in (dict(n=-1, p=0.1, alpha=0.1), dict(n=10, p=1.5, alpha=0.1), dict(n=10, p=0.1, alpha=0.0)):
        with pytest.raises(ValueError):
            binomial_threshold(**bad)


def test_trigger_p_value() -> None:
    assert trigger_p_value(28, 100, 10) == pytest.approx(binomial_tail(28, 100, 0.1), rel=1e-12)
    assert trigger_p_value(0, 100, 10) == 1.0
    assert trigger_p_value(100, 100, 10) == pytest.approx(1e-100, rel=1e-9)
    assert trigger_p_value(3, 4, 100) == pytest.approx(4 * 0.01**3 * 0.99 + 0.01**4, rel=1e-9)
    with pytest.raises(ValueError):
        trigger_p_value(101, 100, 10)
    with pytest.raises(ValueError):
        trigger_p_value(5, 100, 0)
