"""The benchmark's helpers: memory arithmetic, medians, LoRA's disabled-adapter reference."""

import copy

import pytest
import torch

from dpo_lab.bench import bench_pairs, lora_policy, median, peak_memory_mb, state_memory_mb
from dpo_lab.collate import collate_pairs, encode_pairs
from dpo_lab.logprobs import sequence_logprobs
from dpo_lab.models import tiny_gpt2


def test_state_memory_by_hand():
    trained = torch.nn.Linear(10, 10)  # 110 float32 parameters: weights, gradient, 2 AdamW moments
    frozen = torch.nn.Linear(10, 5).requires_grad_(False)  # 55 parameters: weights only
    expected = (110 * 4 * 4 + 55 * 4) / 2**20
    assert state_memory_mb([trained, frozen]) == pytest.approx(expected)
    # a module listed twice (shared weights) counts once
    assert state_memory_mb([trained, trained]) == pytest.approx(110 * 16 / 2**20)


def test_median_and_peak_memory():
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert peak_memory_mb(torch.device("cpu")) > 10  # a Python process with torch holds more than 10 MiB


def test_bench_pairs_have_fixed_word_counts():
    pairs = bench_pairs(5, prompt_words=4, completion_words=6)
    assert pairs == bench_pairs(5, prompt_words=4, completion_words=6)
    assert all(len(p["prompt"].split()) == 4 and len(p["chosen"].split()) == 6 for p in pairs)


def test_lora_disabled_adapters_reproduce_the_base_model(tokenizer):
    base = tiny_gpt2(tokenizer, seed=0, n_layer=1, n_embd=32, n_head=2).eval()
    policy = lora_policy(copy.deepcopy(base), rank=4).eval()
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    chosen, rejected, _ = encode_pairs(tokenizer, bench_pairs(4, completion_words=5), verbose=False)
    batch = collate_pairs(chosen, rejected, tokenizer.pad_token_id)
    with torch.no_grad():
        expected = sequence_logprobs(base, **batch)
        with policy.disable_adapter():
            disabled = sequence_logprobs(policy, **batch)
        adapted = sequence_logprobs(policy, **batch)
    assert torch.allclose(disabled, expected, atol=1e-5)
    assert (adapted - expected).abs().max() > 1e-3
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
