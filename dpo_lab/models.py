"""Models: a tiny GPT-2 built from scratch, or a Hub checkpoint, through one function.

The tiny profile uses transformers' ``GPT2LMHeadModel`` itself with a small config
(a few layers, a narrow width), so every line of course code is the code a learner
would run on the real ``gpt2``: only the sizes differ.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

TINY_GPT2 = {"n_layer": 2, "n_head": 4, "n_embd": 128, "n_positions": 256}


def tiny_gpt2(tokenizer, seed: int = 0, **overrides) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 sized by :data:`TINY_GPT2` (plus ``overrides``).

    The vocabulary and special tokens come from ``tokenizer``. Dropout is off: the
    course trains on small data for few steps, and DPO needs the policy and the
    reference to score a sequence identically at step 0.
    """
    sizes = {**TINY_GPT2, **overrides}
    config = GPT2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        **sizes,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return model


def load_model(name_or_path: str = "tiny", tokenizer=None, seed: int = 0, dtype=None, **tiny_overrides):
    """``"tiny"``: :func:`tiny_gpt2` (needs ``tokenizer``); otherwise ``from_pretrained``.

    ``name_or_path`` may be a Hub id (``"gpt2"``) or a local folder written by
    ``save_pretrained``. Dropout is switched off in both cases (see :func:`tiny_gpt2`).
    """
    if name_or_path == "tiny":
        if tokenizer is None:
            raise ValueError("load_model('tiny') needs the tokenizer to size the vocabulary")
        return tiny_gpt2(tokenizer, seed=seed, **tiny_overrides)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    disable_dropout(model)
    if tokenizer is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Set every dropout probability to 0 (what TRL's ``disable_dropout=True`` does)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
