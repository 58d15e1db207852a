"""Evaluation helpers: win rate, the Monte-Carlo KL, and the runs/ cache key."""

import copy

import numpy as np
import pytest
import torch

from dpo_lab.cache import config_key
from dpo_lab.evaluate import kl_to_reference, sample, score_samples, win_rate
from dpo_lab.models import tiny_gpt2


def test_win_rate_counts_ties_as_half():
    assert win_rate([1, 2, 3, 4], [0, 2, 5, 1]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    with pytest.raises(ValueError, match="paired"):
        win_rate([1, 2], [1])


def test_config_key_ignores_order_and_sees_values():
    assert config_key({"a": 1, "b": [1, 2]}) == config_key({"b": [1, 2], "a": 1})
    assert config_key({"a": 1}) != config_key({"a": 2})


def test_kl_of_a_model_to_itself_is_zero_and_positive_otherwise(tokenizer):
    model = tiny_gpt2(tokenizer, seed=0, n_layer=1, n_embd=32, n_head=2).eval()
    samples = sample(model, tokenizer, ["Review: The film", "Hi"], n=8, max_new_tokens=6, seed=0)
    assert len(samples.texts) == 16 and samples.prompts[:8] == ["Review: The film"] * 8
    assert kl_to_reference(model, model, tokenizer, samples) == 0.0
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    samples = sample(other, tokenizer, ["Review: The film"] * 40, max_new_tokens=4, seed=1)
    assert kl_to_reference(other, model, tokenizer, samples) > 0


def test_scores_are_the_sampled_ids_log_probs(tokenizer):
    """The score of a sample equals the sum of log-probs of exactly the sampled tokens."""
    model = tiny_gpt2(tokenizer, seed=0, n_layer=1, n_embd=32, n_head=2).eval()
    samples = sample(model, tokenizer, ["Review: The film"], n=3, max_new_tokens=5, seed=2)
    scores = score_samples(model, tokenizer, samples)
    for i in range(3):
        ids = samples.prompt_ids[i] + samples.completion_ids[i]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        start = len(samples.prompt_ids[i])
        expected = sum(logp[t - 1, ids[t]].item() for t in range(start, len(ids)))
        assert scores[i].item() == pytest.approx(expected, abs=1e-4)
    assert np.isfinite(scores.numpy()).all()


def test_token_kl_is_exact_for_one_token_and_agrees_with_logratio(tokenizer):
    """With one new token the token estimator is the exact KL of the next-token distributions;
    over many samples the two estimators agree (same expectation)."""
    model = tiny_gpt2(tokenizer, seed=0, n_layer=1, n_embd=32, n_head=2).eval()
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    prompt = "Review: The film"
    one = sample(other, tokenizer, [prompt], n=5, max_new_tokens=1, seed=4)
    ids = torch.tensor([one.prompt_ids[0]])
    with torch.no_grad():
        logp = torch.log_softmax(other(ids).logits[0, -1].double(), -1)
        logq = torch.log_softmax(model(ids).logits[0, -1].double(), -1)
    exact = (logp.exp() * (logp - logq)).sum().item()
    assert kl_to_reference(other, model, tokenizer, one) == pytest.approx(exact, rel=1e-4)
    many = sample(other, tokenizer, [prompt], n=3000, max_new_tokens=3, seed=5, batch_size=1000)
    tokens = kl_to_reference(other, model, tokenizer, many, method="tokens")
    logratio = kl_to_reference(other, model, tokenizer, many, method="logratio")
    assert tokens == pytest.approx(logratio, rel=0.1)


def test_a_tie_counts_one_half_everywhere():
    import torch

    from dpo_lab.evaluate import pairwise_wins, win_rate
    from dpo_lab.reward_model import preference_accuracy  # noqa: F401  (uses the same rule)

    margins = np.array([2.0, 0.0, -1.0, 0.0])
    assert pairwise_wins(margins).tolist() == [1.0, 0.5, 0.0, 0.5]
    assert pairwise_wins(torch.tensor([0.5, 0.0, -0.5])).tolist() == [1.0, 0.5, 0.0]
    assert win_rate(np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0, 4.0])) == 0.5
