"""LoRA adapters (dpo_lab.models.lora_policy): the disabled-adapter model is the base model, so it is its own
DPO reference, and only the adapters train."""

import copy

import torch

from dpo_lab.bench import bench_pairs
from dpo_lab.collate import collate_pairs, encode_pairs
from dpo_lab.logprobs import sequence_logprobs
from dpo_lab.models import lora_policy, tiny_gpt2


def test_lora_disabled_adapters_reproduce_the_base_model(tokenizer):
    base = tiny_gpt2(tokenizer, seed=0, n_layer=1, n_embd=32, n_head=2).eval()
    policy = lora_policy(copy.deepcopy(base), rank=4).eval()
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:  # B starts at zero: give it weights, as training would
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    chosen, rejected, _ = encode_pairs(tokenizer, bench_pairs(4, completion_words=5, tokenizer=tokenizer),
                                       verbose=False)
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
