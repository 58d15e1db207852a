"""The benchmark (dpo_lab.bench): its synthetic pairs, its models, and that what it times is one computation."""

import copy

import pytest
import torch

from dpo_lab.bench import bench_pairs, one_token_words
from dpo_lab.collate import encode_pairs


def test_bench_pairs_are_synthetic_seeded_and_of_exact_token_counts(tokenizer):
    """Seeded; every prompt and completion is exactly its number of tokens (no padding between the two
    frameworks' batches); chosen and rejected differ; and the words come from the tokenizer, not from a task."""
    pairs = bench_pairs(5, prompt_words=4, completion_words=6, tokenizer=tokenizer)
    assert pairs == bench_pairs(5, prompt_words=4, completion_words=6, tokenizer=tokenizer)
    assert pairs != bench_pairs(5, prompt_words=4, completion_words=6, tokenizer=tokenizer, seed=1)
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    chosen, rejected, _ = encode_pairs(tokenizer, pairs, verbose=False)
    assert [(len(p), len(c)) for p, c in chosen + rejected] == [(4, 6 + 1)] * 10  # + EOS
    words = set(one_token_words(tokenizer))
    assert {w for p in pairs for text in p.values() for w in text.split()} <= words
    # the default: 12 + 31 + EOS = 44 tokens a sequence
    assert {len(p) + len(c) for p, c in encode_pairs(tokenizer, bench_pairs(3), verbose=False)[0]} == {44}
    with pytest.raises(ValueError, match="at least one prompt and one completion word"):
        bench_pairs(2, prompt_words=12, seq_len=13, tokenizer=tokenizer)


def test_make_model_and_seq_len_pairs(tokenizer):
    from dpo_lab.bench import make_model

    model = make_model("tiny", tokenizer, vocab_size=4096, attn="eager")
    assert model.config.vocab_size == 4096 and model.config._attn_implementation == "eager"
    assert model.lm_head.weight is model.transformer.wte.weight
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        make_model("tiny", tokenizer, vocab_size=10)
    pairs = bench_pairs(6, seq_len=40, tokenizer=tokenizer)
    chosen, rejected, _ = encode_pairs(tokenizer, pairs, verbose=False)
    assert {len(p) + len(c) for p, c in chosen + rejected} == {40}


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

    pairs = bench_pairs(8, completion_words=6, tokenizer=tokenizer)
    out = {}
    for chunk_size in (None, 4):
        policy = make_model("tiny", tokenizer)
        reference = copy.deepcopy(policy).requires_grad_(False)
        out[chunk_size] = dpo_lab_steps(policy, reference, tokenizer, pairs, batch_size=4, steps=2, warmup=1,
                                        lr=1e-3, chunk_size=chunk_size)
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
