"""Models: a tiny GPT-2 built from scratch, or a Hub checkpoint, through one function; LoRA adapters.

The tiny profile uses transformers' ``GPT2LMHeadModel`` itself with a small config
(a few layers, a narrow width), so every line of course code is the code a learner
would run on the real ``gpt2``: only the sizes differ.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from dpo_lab.extras import require

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


#: config fields that hold a dropout probability (GPT-2, BERT/DistilBERT, most others)
DROPOUT_CONFIG_FIELDS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout", "dropout",
                         "attention_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob",
                         "hidden_dropout", "activation_dropout", "seq_classif_dropout")


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Set every dropout probability to 0 (what TRL's ``disable_dropout=True`` does).

    The config's dropout fields are zeroed too, so a model saved with ``save_pretrained``
    and loaded back (the ``runs/`` cache) has no dropout either.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    if config is not None:
        for field in DROPOUT_CONFIG_FIELDS:
            if isinstance(getattr(config, field, None), float):
                setattr(config, field, 0.0)
    return model


def load_trained(folder, tokenizer=None, device=None):
    """A causal LM saved with ``save_pretrained`` (the ``runs/`` cache), dropout off, on ``device``."""
    model = load_model(str(folder), tokenizer)
    return model.to(device) if device is not None else model


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


#: GPT-2's projections that LoRA adapts: attention's c_attn (d -> 3d) and c_proj (d -> d), the MLP's
#: c_fc (d -> 4d) and c_proj (4d -> d)
LORA_TARGETS = ("c_attn", "c_proj", "c_fc")


def lora_policy(model, rank: int = 16, alpha: int = 32, targets=LORA_TARGETS):
    """Wrap a GPT-2 with LoRA adapters (Hu et al., 2021): W x + (alpha/r) B A x, A and B trained.

    A rank-r adapter on a d_in -> d_out projection adds r (d_in + d_out) parameters; B starts at
    zero, so the wrapped model starts equal to ``model``. GPT-2's projections are ``Conv1D``
    layers that store W transposed, hence ``fan_in_fan_out``. With the adapters disabled
    (``with policy.disable_adapter():``) the model is exactly the base model, so it is its own
    DPO reference. The base weights are ``model``'s own tensors, frozen, not a copy.
    """
    peft = require("peft")
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0,
                             fan_in_fan_out=True, bias="none", task_type="CAUSAL_LM")
    return peft.get_peft_model(model, config)
