"""The benchmark's helpers: memory arithmetic, LoRA's disabled-adapter reference."""

import copy

import pytest
import torch

from dpo_lab.bench import bench_pairs, lora_policy, peak_memory_mb, state_memory_mb
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


def test_peak_memory():
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


def test_peak_memory_is_reset_and_sees_a_short_block(fresh_pages):
    """On a CPU the peak is the kernel's counter (VmHWM) after a reset: a 64 MiB block touched and freed at once
    is seen whole, and the level before it is not counted."""
    from dpo_lab.bench import reset_peak_memory
    from dpo_lab.costs import peak_rss_mb

    if peak_rss_mb() is None:
        pytest.skip("no kernel peak-RSS counter on this platform")
    cpu = torch.device("cpu")
    base = reset_peak_memory(cpu)
    assert peak_memory_mb(cpu) - base < 8
    fresh_pages(64)
    assert 62 < peak_memory_mb(cpu) - base < 80


def test_make_model_and_seq_len_pairs(tokenizer):
    from dpo_lab.bench import make_model

    model = make_model("tiny", tokenizer, vocab_size=4096, attn="eager")
    assert model.config.vocab_size == 4096 and model.config._attn_implementation == "eager"
    assert model.lm_head.weight is model.transformer.wte.weight
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        make_model("tiny", tokenizer, vocab_size=10)
    pairs = bench_pairs(6, seq_len=40, tokenizer=tokenizer)
    chosen, rejected, _ = encode_pairs(tokenizer, pairs, verbose=False)
    lengths = [len(p) + len(c) for p, c in chosen + rejected]
    assert all(36 <= n <= 42 for n in lengths), lengths


def test_gpt2_body_is_gpt2_small(tokenizer):
    """The size notebook 07 benchmarks on a GPU (on a CPU it uses the tiny body): checked without allocating it."""
    from dpo_lab.bench import make_model

    with torch.device("meta"):
        model = make_model("gpt2", tokenizer)
    assert sum(p.numel() for p in model.parameters()) == 124_439_808  # GPT-2 small, tied embeddings
    assert model.config.vocab_size == 50257 and model.config.n_layer == 12


def test_dpo_lab_steps_chunked_and_plain_take_the_same_steps(tokenizer):
    """The two log-prob paths train the same: equal losses after two steps, so the benchmark compares speed and
    memory of one computation."""
    from dpo_lab.bench import dpo_lab_steps, make_model

    pairs = bench_pairs(8, completion_words=6)
    out = {}
    for chunk_size in (None, 4):
        policy = make_model("tiny", tokenizer)
        reference = copy.deepcopy(policy).requires_grad_(False)
        out[chunk_size] = dpo_lab_steps(policy, tokenizer, pairs, batch_size=4, steps=2, warmup=1, lr=1e-3,
                                        reference=reference, chunk_size=chunk_size)
        out[chunk_size]["weights"] = policy.transformer.h[0].attn.c_attn.weight.detach().clone()
    assert out[None]["shape"] == out[4]["shape"] and out[4]["peak_rise_mb"] >= 0 and out[4]["step_s"] > 0
    torch.testing.assert_close(out[4]["weights"], out[None]["weights"], rtol=1e-4, atol=1e-6)


def test_logprobs_memory_chunked_holds_far_less():
    """One forward+backward at GPT-2's vocabulary (8 rows x 160 tokens, 2-layer body of width 128): the chunked
    path's peak RSS rise is under a third of the plain path's. Run in this process for speed (the benchmark uses
    fresh ones), chunked first, so that any memory the allocator keeps from the first run favours the plain path."""
    from dpo_lab.bench import _logprobs_memory_run
    from dpo_lab.costs import peak_rss_mb

    if peak_rss_mb() is None:
        pytest.skip("no kernel peak-RSS counter on this platform")
    chunked = _logprobs_memory_run(True, "tiny", 50257, 8, 160, 8, 1)
    plain = _logprobs_memory_run(False, "tiny", 50257, 8, 160, 8, 1)
    # plain: at least the float32 logits of the 8 x 152 scored positions (233 MiB) and their gradient
    assert plain["peak_rise_mb"] > 2 * 8 * 152 * 50257 * 4 / 2**20
    assert chunked["peak_rise_mb"] < plain["peak_rise_mb"] / 3
