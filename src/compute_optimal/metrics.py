"""Pure estimators over sample counts: pass@k / coverage@k, diversity@k, intervals, relative differences.

This is the single copy of these formulas: the data analysis (coverage and diversity of sampled
solutions) and the evaluation stage (pass@k of a fine-tuned model) both use it.

coverage@k (pass@k, Chen et al. 2021): with ``n`` samples of which ``c`` are correct, the chance that
a random ``k``-subset holds at least one correct sample is ``1 - C(n-c, k) / C(n, k)``. It is computed
as the product ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``, which never forms the (huge) binomials.

diversity@k: the expected number of distinct correct solutions in a random ``k``-subset of the ``n``
samples. A distinct solution that occurs ``m`` times is in the subset unless all ``k`` picks miss its
``m`` copies, so it counts with probability ``1 - C(n-m, k) / C(n, k)`` = ``pass_at_k(n, m, k)``; by
linearity of expectation diversity@k is the sum of that over the solution's duplicate classes. At
``k = n`` it is simply the number of distinct correct solutions.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from statistics import NormalDist


def _check(n: int, c: int, k: int) -> None:
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..n={n}, got {k}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k: P(a random k-subset of n samples, c of them correct, holds a correct one)."""
    _check(n, c, k)
    if n - c < k:  # every k-subset must include a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def coverage_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """Mean pass@k over problems, each given as ``(n, c)``: the share of problems solved within k samples.

    Problems share few distinct ``(n, c)`` pairs, so each pair's product is computed once.
    """
    tally = Counter((int(n), int(c)) for n, c in counts)
    total = sum(tally.values())
    if not total:
        raise ValueError("coverage of zero problems is undefined")
    return sum(times * pass_at_k(n, c, k) for (n, c), times in tally.items()) / total


def coverage_curve(counts: Iterable[tuple[int, int]], max_k: int) -> list[float]:
    """coverage@k for k = 1..max_k."""
    counts = list(counts)
    return [coverage_at_k(counts, k) for k in range(1, max_k + 1)]


def diversity_at_k(problems: Iterable[tuple[int, Sequence[int]]], k: int) -> float:
    """Mean over problems, each given as ``(n, sizes of its distinct correct solutions)``, of the
    expected number of distinct correct solutions among k samples: a class of m of the n samples is hit
    by a random k-subset with probability pass@k(n, m, k), so the expectation is their sum."""
    memo: dict[tuple[int, int], float] = {}
    total, count = 0.0, 0
    for n, sizes in problems:
        _check(n, 0, k)
        if sum(sizes) > n or any(m < 1 for m in sizes):
            raise ValueError(f"class sizes {list(sizes)} do not fit in n={n} samples")
        for m in sizes:
            if (n, m) not in memo:
                memo[n, m] = pass_at_k(n, m, k)
            total += memo[n, m]
        count += 1
    if not count:
        raise ValueError("diversity of zero problems is undefined")
    return total / count


def diversity_curve(problems: Iterable[tuple[int, Sequence[int]]], max_k: int) -> list[float]:
    """diversity@k for k = 1..max_k."""
    problems = list(problems)
    return [diversity_at_k(problems, k) for k in range(1, max_k + 1)]


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; good at small counts and at 0 or 1.

    Returns (0.0, 1.0) for ``total == 0``: nothing was measured.
    """
    if not 0 <= successes <= total:
        raise ValueError(f"need 0 <= successes <= total, got {successes} of {total}")
    if total == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    # At 0 (or all) successes the bound is exactly 0 (or 1); elsewhere clamp float round-off.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == total else min(1.0, centre + half)
    return low, high


def relative_difference(value: float | None, baseline: float | None) -> float | None:
    """``100 · (value - baseline) / baseline`` (WC over SE in %); None where the baseline is 0 or missing."""
    if value is None or baseline is None or baseline == 0:
        return None
    return 100.0 * (value - baseline) / baseline


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its percentile interval, resampling the pairs (a_i, b_i) together.

    For two models scored on the same test problems: resampling problems (not each model's scores
    separately) keeps the pairing, so the interval reflects problem-to-problem variation once.
    """
    import numpy as np

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or not len(x):
        raise ValueError(
            f"paired_bootstrap needs two equal-length, non-empty score lists, got {x.shape} and {y.shape}"
        )
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(resamples, len(x)))
    diffs = (x[idx] - y[idx]).mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return float(x.mean() - y.mean()), float(low), float(high)
