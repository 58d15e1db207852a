"""Batched sampling with the KV cache.

Prompts are left-padded so every row's next token sits in the last column; the
first forward pass fills the key/value cache with the prompt, and every later step
feeds only the newest token (one column), reusing the cache: the cost of a step
stays constant instead of growing with the sequence.

Sampling from the next-token distribution, in this order:
temperature (0 means greedy), top-k (keep the k most likely tokens), top-p (keep
the smallest set whose probability reaches p, Holtzman et al., 2020).
"""

from __future__ import annotations

import torch

from dpo_lab.logprobs import position_ids_from_mask


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the top-p nucleus."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the mass *before* it already reaches top_p (the first always stays)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index a row drawn from ``probs`` (rows summing to 1), by inverse-CDF sampling.

    Draw u ~ U(0, 1) and return the first index whose cumulative probability exceeds u.
    Same distribution as ``torch.multinomial(probs, 1)``, several times faster on CPU.
    """
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp(max=probs.shape[-1] - 1).squeeze(-1)


@torch.no_grad()
def generate_ids(model, prompt_ids: list[list[int]], eos_token_id: int, pad_token_id: int,
                 max_new_tokens: int = 32, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, generator: torch.Generator | None = None) -> list[list[int]]:
    """Sample completions for one batch of tokenized prompts; returns new token ids per row.

    A row stops after its first EOS (returned as the row's last token, since the
    probability of stopping is part of the completion's probability) or after
    ``max_new_tokens`` tokens.
    """
    device = next(model.parameters()).device
    width = max(len(p) for p in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(prompt_ids):
        input_ids[row, width - len(ids):] = torch.tensor(ids)
        attention_mask[row, width - len(ids):] = 1
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    positions = position_ids_from_mask(attention_mask)

    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                use_cache=True, logits_to_keep=1)
    finished = torch.zeros(len(prompt_ids), dtype=torch.bool, device=device)
    new_tokens = []
    next_pos = positions[:, -1:] + 1
    for _ in range(max_new_tokens):
        logits = out.logits[:, -1].float()
        if temperature == 0:
            token = logits.argmax(-1)
        else:
            probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1).cpu()
            token = sample_categorical(probs, generator).to(device)
        token = torch.where(finished, torch.full_like(token, pad_token_id), token)
        new_tokens.append(token)
        finished |= token == eos_token_id
        if finished.all():
            break
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        out = model(input_ids=token[:, None], attention_mask=attention_mask, position_ids=next_pos,
                    cache=out.cache, use_cache=True)
        next_pos = next_pos + 1

    tokens = torch.stack(new_tokens, dim=1).tolist() if new_tokens else [[] for _ in prompt_ids]
    completions = []
    for row in tokens:
        completions.append(row[:row.index(eos_token_id) + 1] if eos_token_id in row else row)
    return completions

