"""Counting and measuring memory (dpo_lab.costs): the one count of weights, gradients and AdamW
moments, checked by hand; and the peak-memory counter the benchmark and notebook 07 read."""

import copy

import pytest
import torch

from dpo_lab.costs import model_memory_mb, peak_memory_mb, peak_rss_mb, reset_peak_memory
from dpo_lab.models import lora_policy, tiny_gpt2


def test_model_memory_by_hand():
    trained = torch.nn.Linear(10, 10)  # 110 float32 parameters: weights, gradient, 2 AdamW moments = 16 bytes each
    kept = torch.nn.Linear(10, 5)  # 55 parameters: weights only, 4 bytes each
    assert model_memory_mb(held=[kept]) == pytest.approx(55 * 4 / 2**20)
    assert model_memory_mb(held=[kept], trained=[trained]) == pytest.approx((110 * 16 + 55 * 4) / 2**20)
    # plain SGD keeps no moments: weights and gradients, 8 bytes a parameter
    assert model_memory_mb(trained=[trained], optimizer_states=0) == pytest.approx(110 * 8 / 2**20)
    # one tensor is counted once: a model passed twice, or held and trained (then it is trained)
    assert model_memory_mb(trained=[trained, trained]) == pytest.approx(110 * 16 / 2**20)
    assert model_memory_mb(held=[trained], trained=[trained]) == pytest.approx(110 * 16 / 2**20)
    # a frozen parameter of a trained model has no gradient and no moments
    frozen = torch.nn.Linear(10, 10).requires_grad_(False)
    assert model_memory_mb(trained=[frozen]) == pytest.approx(110 * 4 / 2**20)
    # bytes per number follow the dtype: bf16 is 2 bytes, its gradient and moments too
    assert model_memory_mb(trained=[torch.nn.Linear(10, 10).to(torch.bfloat16)]) == pytest.approx(110 * 8 / 2**20)


def test_model_memory_of_lora_counts_one_copy_of_the_base(tokenizer):
    """LoRA: the base weights once, frozen (4 bytes a parameter), the adapters trained (16); rank r on a
    d_in x d_out projection adds r (d_in + d_out): per GPT-2 block c_attn (d -> 3d), attention's c_proj
    (d -> d), c_fc (d -> 4d) and the MLP's c_proj (4d -> d)."""
    layers, width, rank = 2, 32, 4
    base = tiny_gpt2(tokenizer, seed=0, n_layer=layers, n_embd=width, n_head=2)
    n_base = sum(p.numel() for p in base.parameters())  # tied embeddings counted once
    policy = lora_policy(copy.deepcopy(base), rank=rank)
    n_lora = layers * rank * ((width + 3 * width) + (width + width) + (width + 4 * width) + (4 * width + width))
    assert sum(p.numel() for p in policy.parameters() if p.requires_grad) == n_lora
    assert model_memory_mb(trained=[policy]) == pytest.approx((4 * n_base + 16 * n_lora) / 2**20)
    # full fine-tuning with a separate reference copy: 16 bytes a policy parameter, 4 a reference one
    reference = copy.deepcopy(base).requires_grad_(False)
    assert model_memory_mb(held=[reference], trained=[base]) == pytest.approx(20 * n_base / 2**20)


def test_model_memory_on_the_meta_device_allocates_nothing(tokenizer):
    """Counted from shapes and dtypes: GPT-2 small's 124,439,808 parameters, trained with AdamW, 16 bytes each."""
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config())
    assert model_memory_mb(trained=[model]) == pytest.approx(16 * 124_439_808 / 2**20)


def test_peak_memory():
    assert peak_memory_mb(torch.device("cpu")) > 10  # a Python process with torch holds more than 10 MiB


def test_peak_memory_is_reset_and_sees_a_short_block(fresh_pages):
    """On a CPU the peak is the kernel's counter (VmHWM) after a reset: a 64 MiB block touched and freed at once
    is seen whole, and the level before it is not counted."""
    if peak_rss_mb() is None:
        pytest.skip("no kernel peak-RSS counter on this platform")
    cpu = torch.device("cpu")
    base = reset_peak_memory(cpu)
    assert peak_memory_mb(cpu) - base < 8
    fresh_pages(64)
    assert 62 < peak_memory_mb(cpu) - base < 80
