"""The log-probability of a completion given its prompt.

For a prompt x and a completion y = (y_1, ..., y_T) a causal LM factorises

    log pi(y|x) = sum_t log pi(y_t | x, y_<t)                        (sum)
    (1/T) sum_t log pi(y_t | x, y_<t)                                (mean, "average=True")

The logits at position i predict the token at position i+1, so the labels are the
inputs shifted left by one, and only completion positions count. This is the
quantity every preference loss in the course is built on.
"""

from __future__ import annotations

import torch


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[label]`` at every position, without the full softmax tensor.

    ``logits`` (..., vocab) and ``labels`` (...) -> (...). Computed in float32 so that
    bf16/fp16 logits do not lose the small differences DPO cares about.
    """
    logits = logits.float()
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0, 1, 2, ... counted over real tokens only, so left padding changes nothing."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      completion_mask: torch.Tensor, average: bool = False) -> torch.Tensor:
    """Summed (or, with ``average=True``, per-token mean) log pi(completion | prompt), one a row.

    The inputs come from :func:`dpo_lab.collate.pad_batch`. The result does not depend
    on the amount or side of padding, nor on which other rows share the batch: padding
    is masked out of attention, positions are counted over real tokens only, and only
    completion tokens are summed.

    Only the logits that score completion tokens are computed (``logits_to_keep``): the
    vocabulary projection of prompt positions would be thrown away anyway.
    """
    length = input_ids.shape[1]
    # Label at position i+1 is scored by the logits at position i.
    label_mask = completion_mask[:, 1:].bool()
    if not label_mask.any(dim=1).all():
        raise ValueError("a row has no completion tokens to score")
    first = int(label_mask.float().argmax(dim=1).min())  # earliest logits position needed
    keep = (length - 1) - first
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask), use_cache=False,
                logits_to_keep=keep + 1)
    logits = out.logits[:, :-1] if keep > 0 else out.logits[:, :0]
    labels = input_ids[:, first + 1:]
    mask = label_mask[:, first:]
    per_token = token_logprobs(logits, labels) * mask
    total = per_token.sum(-1)
    if average:
        return total / mask.sum(-1)
    return total


def completion_lengths(completion_mask: torch.Tensor) -> torch.Tensor:
    """Number of completion tokens (EOS included) in each row."""
    return completion_mask.sum(-1)
