"""Intervals for the course's claims: Wilson for a proportion, the bootstrap for the rest.

A claim such as "DPO beats SFT" is a statement about the *test items we happened to draw*;
another draw of items would give another number. A 95% interval says how far that number
could move, and :func:`dpo_lab.claims.claim` only accepts a claim when the whole interval
clears the threshold.

* :func:`wilson_interval` -- a share of successes ``k / n`` (an accuracy, a pass rate, a
  win rate without ties). The Wilson score interval (Wilson 1927) stays inside [0, 1] and
  behaves at 0 and n, where the textbook ``p +- 1.96 sqrt(p(1-p)/n)`` collapses to a point.
* :func:`bootstrap_interval` -- any statistic of one or more arrays that are aligned item
  by item (a mean, an F1, a win rate with ties counting half). Items are resampled with
  replacement, *the same indices for every array*, so two methods scored on the same
  items give a **paired** interval: the item-to-item difficulty cancels in their difference
  (Efron & Tibshirani 1993, percentile bootstrap).
* :func:`paired_difference` -- the common case: mean(a) - mean(b) with its paired interval.

Every function returns an :class:`Interval`, a ``(lower, upper)`` pair that also says how it
was made (``interval.method``), which ``claim`` records beside the numbers.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

#: resamples for the bootstrap: 2,000 keeps the 2.5% / 97.5% percentiles stable to ~0.1 of a
#: standard error and costs milliseconds for the course's few hundred items
N_RESAMPLES = 2000


class Interval(tuple):
    """``(lower, upper)`` with ``.method``, the way it was computed (recorded with a claim)."""

    def __new__(cls, lower: float, upper: float, method: str):
        interval = super().__new__(cls, (float(lower), float(upper)))
        interval.method = method
        return interval

    @property
    def lower(self) -> float:
        return self[0]

    @property
    def upper(self) -> float:
        return self[1]


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (e.g. 0.95), got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> Interval:
    """Wilson score interval for a proportion ``successes / n``.

    centre = (p + z^2 / 2n) / (1 + z^2 / n),
    half-width = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2).
    """
    if n <= 0:
        raise ValueError(f"wilson_interval needs n > 0 trials, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: successes={successes} must lie in [0, n={n}]")
    z = _z(level)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # clip the rounding error at the ends (p = 0 or 1 gives exactly 0 or 1 in exact arithmetic)
    return Interval(max(0.0, centre - half), min(1.0, centre + half), f"Wilson {level:.0%}, n={n}")


def bootstrap_interval(statistic, *arrays, n_resamples: int = N_RESAMPLES, level: float = 0.95,
                       seed: int = 0, paired: bool = True) -> Interval:
    """Percentile-bootstrap interval of ``statistic(*arrays)`` over resampled items.

    ``paired=True``: ``arrays`` are aligned item by item (row ``i`` of each is test item ``i``);
    each resample draws ``n`` item indices with replacement and applies them to *every* array,
    so the interval of a difference between methods scored on the same items is paired.
    ``paired=False``: the arrays are independent samples (two runs that saw different items);
    each is resampled on its own, and they may differ in length. The generator is seeded: the
    same inputs give the same interval.
    """
    if not arrays:
        raise ValueError("bootstrap_interval needs at least one array of per-item values")
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays[0])
    for i, a in enumerate(arrays):
        if len(a) < 2:
            raise ValueError(f"bootstrap_interval needs at least 2 items, array {i} has {len(a)}")
        if paired and len(a) != n:
            raise ValueError(f"bootstrap_interval: array {i} has {len(a)} items, array 0 has {n} "
                             "(paired arrays must be aligned item by item; paired=False for independent samples)")
    if n_resamples < 1000:
        raise ValueError(f"n_resamples={n_resamples}: use at least 1,000 resamples for a 95% interval")
    rng = np.random.default_rng(seed)
    if paired:
        indices = rng.integers(0, n, size=(n_resamples, n))
        values = np.array([float(statistic(*(a[idx] for a in arrays))) for idx in indices])
    else:
        draws = [rng.integers(0, len(a), size=(n_resamples, len(a))) for a in arrays]
        values = np.array([float(statistic(*(a[d[r]] for a, d in zip(arrays, draws)))) for r in range(n_resamples)])
    if not np.isfinite(values).all():
        raise ValueError("bootstrap_interval: the statistic was not finite on some resamples "
                         f"({int((~np.isfinite(values)).sum())} of {n_resamples})")
    tail = (1 - level) / 2
    lower, upper = np.quantile(values, [tail, 1 - tail])
    kind = f"{n} items" if paired else "each sample on its own (" + ", ".join(str(len(a)) for a in arrays) + " items)"
    return Interval(lower, upper, f"bootstrap {level:.0%}, {n_resamples} resamples of {kind}")


def _mean_difference(a, b):
    return np.mean(a) - np.mean(b)


def paired_difference(a, b, level: float = 0.95, seed: int = 0) -> tuple[float, Interval]:
    """``mean(a) - mean(b)`` for two methods scored on the same items, and its paired interval."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference needs paired scores, got shapes {a.shape} and {b.shape}")
    interval = bootstrap_interval(_mean_difference, a, b, level=level, seed=seed)
    return float(a.mean() - b.mean()), Interval(*interval, "paired " + interval.method)


def mean_interval(values, level: float = 0.95, seed: int = 0) -> tuple[float, Interval]:
    """The mean of per-item ``values`` and its bootstrap interval."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), bootstrap_interval(np.mean, values, level=level, seed=seed)
