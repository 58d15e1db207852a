"""dpo_lab.stats: intervals checked against values computed by hand and against coverage."""

import math

import numpy as np
import pytest

from dpo_lab.claims import claim, claims_table, reset_claims
from dpo_lab.stats import Interval, bootstrap_interval, mean_interval, paired_difference, wilson_interval


def test_wilson_matches_the_formula_by_hand():
    # k=8, n=10, z=1.959964: centre (0.8 + 0.19207)/1.38415 = 0.71682, half 1.41601*sqrt(0.016+0.009604)=0.22658
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)


def test_wilson_at_the_ends_is_not_a_point():
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)  # the "rule of three" region
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.1611, abs=1e-4)


@pytest.mark.parametrize("successes, n", [(-1, 10), (11, 10), (0, 0)])
def test_wilson_bad_input_names_it(successes, n):
    with pytest.raises(ValueError, match="wilson_interval"):
        wilson_interval(successes, n)


def test_bootstrap_is_seeded_and_records_its_method():
    x = np.random.default_rng(1).normal(size=200)
    a, b = bootstrap_interval(np.mean, x), bootstrap_interval(np.mean, x)
    assert a == b and isinstance(a, Interval)
    assert "2000 resamples of 200 items" in a.method and a.lower < x.mean() < a.upper


def test_bootstrap_mean_interval_is_close_to_the_normal_one():
    x = np.random.default_rng(2).normal(size=400)
    _, (lo, hi) = mean_interval(x)
    se = x.std(ddof=1) / math.sqrt(len(x))
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_paired_interval_is_narrower_than_unpaired_when_items_vary():
    rng = np.random.default_rng(3)
    difficulty = rng.normal(scale=3.0, size=300)  # item effects shared by both methods
    a = difficulty + 0.3 + rng.normal(scale=0.5, size=300)
    b = difficulty + rng.normal(scale=0.5, size=300)
    diff, (lo, hi) = paired_difference(a, b)
    assert lo > 0 and diff == pytest.approx(a.mean() - b.mean())
    _, (alo, ahi) = mean_interval(a)
    _, (blo, bhi) = mean_interval(b)
    assert alo < bhi  # unpaired, the two intervals overlap; paired, the difference clears 0
    assert "paired" in paired_difference(a, b)[1].method


def test_bootstrap_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(4)
    hits = 0
    for trial in range(100):
        x = rng.exponential(size=80)  # skewed, true mean 1
        lo, hi = bootstrap_interval(np.mean, x, n_resamples=1000, seed=trial)
        hits += lo <= 1.0 <= hi
    assert 85 <= hits <= 100


def test_bootstrap_bad_input_names_it():
    with pytest.raises(ValueError, match="aligned"):
        bootstrap_interval(np.mean, np.ones(5), np.ones(4))
    with pytest.raises(ValueError, match="1,000"):
        bootstrap_interval(np.mean, np.ones(5), n_resamples=100)
    with pytest.raises(ValueError, match="paired"):
        paired_difference(np.ones(3), np.ones(4))


def test_claim_records_the_interval_method():
    reset_claims()
    x = np.full(50, 0.7) + np.random.default_rng(5).normal(scale=0.01, size=50)
    value, interval = mean_interval(x)
    assert claim("mean above one half", value, ">", 0.5, interval=interval, mode="record")
    row = claims_table().iloc[0]
    assert row.interval_method.startswith("bootstrap 95%") and row.lower == interval.lower
    reset_claims()


def test_unpaired_bootstrap_resamples_each_sample_on_its_own():
    rng = np.random.default_rng(6)
    a, b = rng.normal(1.0, 1.0, size=300), rng.normal(0.0, 1.0, size=200)  # different lengths
    interval = bootstrap_interval(lambda x, y: x.mean() - y.mean(), a, b, paired=False)
    se = math.sqrt(a.var(ddof=1) / 300 + b.var(ddof=1) / 200)
    assert interval.upper - interval.lower == pytest.approx(2 * 1.96 * se, rel=0.12)
    assert "on its own (300, 200 items)" in interval.method
