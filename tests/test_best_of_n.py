"""Best-of-N: the KL bound and the order-statistics estimator against hand-computed values."""

import math
from itertools import combinations

import numpy as np
import pytest

from dpo_lab.best_of_n import best_of_n, best_of_n_curve, best_of_n_weights, expected_best_of_n, kl_bound


def test_kl_bound_by_hand():
    assert kl_bound(1) == 0.0
    assert kl_bound(2) == pytest.approx(math.log(2) - 0.5)  # 0.19315
    assert kl_bound(4) == pytest.approx(math.log(4) - 0.75)  # 0.63629
    assert kl_bound(64) == pytest.approx(4.158883 - 63 / 64, abs=1e-6)  # 3.17451
    assert np.allclose(kl_bound([1, 2]), [0.0, math.log(2) - 0.5])
    with pytest.raises(ValueError, match="N >= 1"):
        kl_bound(0)


def test_kl_bound_is_exact_for_distinct_outcomes():
    """Best-of-N over a uniform choice among K distinct outcomes, by hand: the bound's limit as K grows."""
    n, k = 4, 2000
    ranks = np.arange(1, k + 1)
    p_best = (ranks / k) ** n - ((ranks - 1) / k) ** n  # P(the best of n draws has rank i)
    exact = float(np.sum(p_best * np.log(p_best * k)))
    assert exact == pytest.approx(kl_bound(n), abs=2e-3) and exact <= kl_bound(n)


def test_weights_by_hand():
    # m = 3, n = 2: the smallest is never the best of a pair; the middle wins 1 of 3 pairs, the largest 2 of 3
    assert best_of_n_weights(3, 2).tolist() == pytest.approx([0.0, 1 / 3, 2 / 3])
    assert best_of_n_weights(5, 1).tolist() == pytest.approx([0.2] * 5)
    assert best_of_n_weights(4, 4).tolist() == [0.0, 0.0, 0.0, 1.0]
    assert best_of_n_weights(64, 8).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="1 <= n <= m"):
        best_of_n_weights(3, 4)


def test_expected_best_of_n_equals_enumerating_every_subset():
    rng = np.random.default_rng(0)
    select, value = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    for n in range(1, 7):
        for row in range(3):
            picks = [max(s, key=lambda i: select[row, i]) for s in combinations(range(6), n)]
            assert expected_best_of_n(select, value, n)[row] == pytest.approx(value[row, picks].mean())
    # by hand: the example of the notebook (best-of-2 from 4 samples)
    assert expected_best_of_n([[0.3, 2.0, -1.0, 0.7]], [[1.0, 0.0, 5.0, 2.0]], 2)[0] == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="same"):
        expected_best_of_n(select, value[:, :3], 2)


def test_curve_rows():
    select = np.array([[1.0, 2.0, 3.0]])
    curve = best_of_n_curve(select, select * 10, [1, 3])
    assert curve.n.tolist() == [1, 3] and curve.value.tolist() == pytest.approx([20.0, 30.0])
    assert curve.kl.tolist() == pytest.approx([0.0, math.log(3) - 2 / 3])


def test_best_of_n_sampling_picks_the_highest_score(tiny_model, tokenizer):
    length = lambda texts: np.array([float(len(t)) for t in texts])
    out = best_of_n(tiny_model, tokenizer, ["The film", "I"], n=5, reward_fn=length, max_new_tokens=6, seed=0)
    assert out["all_scores"].shape == (2, 5) and len(out["samples"].texts) == 10
    for i, prompt in enumerate(["The film", "I"]):
        texts = out["samples"].texts[5 * i:5 * i + 5]
        assert out["scores"][i] == max(len(prompt + t) for t in texts)
        assert len(prompt + out["texts"][i]) == out["scores"][i]
