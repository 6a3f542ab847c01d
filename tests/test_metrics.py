"""The estimators against brute-force enumeration of k-subsets and against hand-computed values."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from compute_optimal import metrics


def brute_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """Share of the k-subsets of n samples (the first c correct) that hold a correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(i < c for i in s) for s in subsets), len(subsets))


def brute_distinct(labels: list[str | None], k: int) -> Fraction:
    """Mean number of distinct correct labels (None = wrong) over all k-subsets."""
    subsets = list(itertools.combinations(labels, k))
    return Fraction(sum(len({x for x in s if x is not None}) for s in subsets), len(subsets))


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_enumeration(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert metrics.pass_at_k(n, c, k) == pytest.approx(float(brute_pass_at_k(n, c, k)), abs=1e-12)


def test_pass_at_k_hand_computed() -> None:
    assert metrics.pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert metrics.pass_at_k(10, 1, 1) == pytest.approx(0.1)
    assert metrics.pass_at_k(3, 0, 3) == 0.0
    assert metrics.pass_at_k(4, 4, 1) == 1.0
    assert metrics.pass_at_k(4, 2, 3) == 1.0  # n - c < k: every 3-subset holds a correct one


def test_pass_at_k_is_stable_at_large_n() -> None:
    """The product form matches exact big-integer binomials where those would overflow floats."""
    for n, c, k in [(1000, 1, 500), (10_000, 3, 1), (2000, 700, 1000), (5000, 10, 4000)]:
        exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        assert metrics.pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-9)
    assert metrics.pass_at_k(1000, 1, 500) == pytest.approx(0.5)


def test_pass_at_k_rejects_impossible_arguments() -> None:
    for n, c, k in [(3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4), (0, 0, 1)]:
        with pytest.raises(ValueError):
            metrics.pass_at_k(n, c, k)


def test_coverage_is_the_mean_over_problems() -> None:
    counts = [(2, 1), (2, 0), (2, 2)]
    assert metrics.coverage_at_k(counts, 1) == pytest.approx((0.5 + 0 + 1) / 3)
    assert metrics.coverage_curve(counts, 2) == pytest.approx([0.5, 2 / 3])
    with pytest.raises(ValueError):
        metrics.coverage_at_k([], 1)


def test_diversity_equals_enumeration() -> None:
    cases = [
        ["a", "a", "b", None],
        ["a", "b", "c", "a", None, None],
        [None, None, None],
        ["a", "a", "a", "a", "a"],
        ["a", "b", "c", "d", "e", "f", "g"],
        ["a", None, "b", "b", None, "c", "a", "a"],
    ]
    for labels in cases:
        n = len(labels)
        sizes = [labels.count(x) for x in dict.fromkeys(x for x in labels if x is not None)]
        for k in range(1, n + 1):
            expected = float(brute_distinct(labels, k))
            assert metrics.diversity_at_k([(n, sizes)], k) == pytest.approx(expected, abs=1e-12), (labels, k)


def test_diversity_hand_computed() -> None:
    # Samples A, A, B, wrong: k=1 -> 2/4 + 1/4; k=2 -> (1 - 1/6) + (1 - 3/6); k=n -> 2 classes.
    assert metrics.diversity_at_k([(4, [2, 1])], 1) == pytest.approx(0.75)
    assert metrics.diversity_at_k([(4, [2, 1])], 2) == pytest.approx(4 / 3)
    assert metrics.diversity_at_k([(4, [2, 1])], 4) == pytest.approx(2.0)
    # Mean over problems, a problem without correct solutions counting 0.
    assert metrics.diversity_curve([(2, [1, 1]), (2, [])], 2) == pytest.approx([0.5, 1.0])
    with pytest.raises(ValueError):
        metrics.diversity_at_k([(3, [2, 2])], 1)


def test_wilson_interval_known_values() -> None:
    low, high = metrics.wilson_interval(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert metrics.wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert metrics.wilson_interval(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)
    assert metrics.wilson_interval(0, 0) == (0.0, 1.0)
    low99, high99 = metrics.wilson_interval(5, 10, confidence=0.99)
    assert low99 < low and high99 > high
    with pytest.raises(ValueError):
        metrics.wilson_interval(3, 2)


def test_relative_difference() -> None:
    assert metrics.relative_difference(1.11, 1.0) == pytest.approx(11.0)
    assert metrics.relative_difference(0.5, 1.0) == pytest.approx(-50.0)
    assert metrics.relative_difference(0.3, 0.0) is None
    assert metrics.relative_difference(None, 0.5) is None
