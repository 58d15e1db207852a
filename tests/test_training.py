"""The training loops: reproducible from a seed, loud on NaN, and doing what they claim."""

import copy

import pandas as pd
import pytest
import torch

from dpo_lab.data import SAMPLE_PATH, load_jsonl
from dpo_lab.evaluate import sample
from dpo_lab.models import tiny_gpt2
from dpo_lab.sampling import filter_logits
from dpo_lab.train import train_dpo, train_sft

PAIRS = load_jsonl(SAMPLE_PATH)[:32]


def run_dpo(tokenizer, **kwargs):
    torch.manual_seed(0)
    policy = tiny_gpt2(tokenizer, seed=1, n_layer=1, n_embd=32, n_head=2)
    ref = copy.deepcopy(policy)
    return train_dpo(policy, ref, tokenizer, PAIRS, beta=0.5, lr=3e-3, batch_size=8, epochs=2, seed=3,
                     progress=False, **kwargs), policy


def test_same_seed_same_metrics(tokenizer):
    first, _ = run_dpo(tokenizer)
    second, _ = run_dpo(tokenizer)
    pd.testing.assert_frame_equal(first, second)


def test_dpo_learns_the_preference(tokenizer):
    metrics, _ = run_dpo(tokenizer)
    # step 0: policy == reference, so the loss is log 2 and the rewards are 0
    assert metrics.loss.iloc[0] == pytest.approx(0.693147, abs=1e-5)
    assert metrics["rewards/margins"].iloc[0] == pytest.approx(0.0, abs=1e-6)
    assert metrics.loss.iloc[-1] < 0.6
    assert metrics["rewards/margins"].iloc[-1] > 0
    expected = {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected"}
    assert expected <= set(metrics.columns)


def test_callback_runs_every_n_steps_and_after_the_last(tokenizer):
    seen = []
    metrics, _ = run_dpo(tokenizer, callback_every=3,
                         callback=lambda s, m: seen.append((s, m.training)) or {"ckpt": s})
    # every 3 steps and the last (8 steps: 32 pairs / 8 * 2 epochs), the model in eval mode
    assert seen == [(3, False), (6, False), (8, False)]
    assert metrics.ckpt.dropna().tolist() == [3, 6, 8]
    assert metrics["step"].tolist() == list(range(1, 9))  # steps count from 1, the updates done
    assert (metrics.callback_seconds.dropna() >= 0).all() and metrics.callback_seconds.notna().sum() == 3


def test_nan_loss_stops_with_clear_error(tokenizer):
    policy = tiny_gpt2(tokenizer, seed=1, n_layer=1, n_embd=32, n_head=2)
    bad = (torch.full((len(PAIRS),), float("nan")), torch.zeros(len(PAIRS)))
    with pytest.raises(FloatingPointError, match="step 1"):
        train_dpo(policy, None, tokenizer, PAIRS, ref_logps=bad, progress=False)


def test_sft_lowers_the_loss(tokenizer):
    model = tiny_gpt2(tokenizer, seed=1, n_layer=1, n_embd=32, n_head=2)
    prompts = [p["prompt"] for p in PAIRS]
    completions = [p["chosen"] for p in PAIRS]
    metrics = train_sft(model, tokenizer, prompts, completions, epochs=4, batch_size=8, lr=3e-3, progress=False)
    assert metrics.loss.iloc[-3:].mean() < metrics.loss.iloc[0] - 1.0


def test_sampling_is_reproducible_and_greedy_matches_hf(tokenizer):
    model = tiny_gpt2(tokenizer, seed=2, n_layer=1, n_embd=32, n_head=2).eval()
    prompts = ["Review: The film", "Hi", "Review: The cast was"]
    a = sample(model, tokenizer, prompts, max_new_tokens=8, seed=5)
    b = sample(model, tokenizer, prompts, max_new_tokens=8, seed=5)
    assert a.texts == b.texts and a.completion_ids == b.completion_ids
    greedy = sample(model, tokenizer, prompts, max_new_tokens=8, temperature=0)
    for prompt, text in zip(prompts, greedy.texts):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        hf = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id)
        assert text == tokenizer.decode(hf[0, ids.shape[1]:], skip_special_tokens=True)


def test_filter_logits():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    # top-p 0.7: 0.5 alone is below 0.7, 0.5+0.3 reaches it -> keep two
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.4)).tolist() == [[False, True, True, True]]


def test_loops_chunked_and_plain_log_probs_train_alike(tokenizer):
    """SFT and DPO on the default chunked log-probs and on the plain path (``chunk_size=None``): the same loss
    curves up to float32 rounding (rounding that Adam can amplify over long runs, hence only 8 steps here)."""
    prompts, completions = [p["prompt"] for p in PAIRS], [p["chosen"] for p in PAIRS]
    curves = {}
    for chunk_size in (None, 7):
        model = tiny_gpt2(tokenizer, seed=1, n_layer=1, n_embd=32, n_head=2)
        sft = train_sft(model, tokenizer, prompts, completions, epochs=2, batch_size=8, lr=3e-3, progress=False,
                        chunk_size=chunk_size)
        dpo, _ = run_dpo(tokenizer, chunk_size=chunk_size)
        curves[chunk_size] = (sft.loss.to_numpy(), dpo.loss.to_numpy(), dpo["rewards/margins"].to_numpy())
    for plain, chunked in zip(curves[None], curves[7]):
        assert chunked == pytest.approx(plain, abs=1e-4)
