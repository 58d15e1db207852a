"""Evaluation: samples with their token ids, gold rewards, KL to the reference, win rates.

The sequence-level KL of a policy pi from its reference pi_ref on a prompt x is

    KL(pi || pi_ref)(x) = E_{y ~ pi(.|x)} [ log pi(y|x) - log pi_ref(y|x) ]

and we estimate it by Monte Carlo from samples y ~ pi. Two unbiased estimators:

* ``"logratio"``: the log-ratio log pi(y|x) - log pi_ref(y|x) of each sample, averaged.
  Simple, but noisy: one unlikely token under pi_ref swings it by many nats.
* ``"tokens"`` (default): by the chain rule, KL(pi || pi_ref)(x) =
  E_{y ~ pi} sum_t KL(pi(.|x, y_<t) || pi_ref(.|x, y_<t)), so we sum the *exact*
  next-token KL over the whole vocabulary at every position of each sample. Same
  expectation, much lower variance (the randomness of the token drawn at each step
  is averaged out analytically).

Scoring the *sampled token ids*, not a re-tokenization of the decoded text, keeps both exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dpo_lab.collate import pad_batch
from dpo_lab.logprobs import DEFAULT_CHUNK_SIZE, sequence_logprobs, token_kl
from dpo_lab.sampling import generate_ids


@dataclass
class Samples:
    """Completions sampled for a list of prompts (one entry per sample)."""

    prompts: list[str]
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]  # EOS included when the sample ended
    texts: list[str]  # decoded completions, without EOS
    # True where a sample was cut off by max_new_tokens before the model produced EOS: its text
    # is not a finished completion, and a pair built from it must not add an EOS the model never
    # sampled (see dpo_lab.collate)
    truncated: list[bool]


def sample(model, tokenizer, prompts: list[str], n: int = 1, max_new_tokens: int = 32, temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0, batch_size: int = 128, seed: int = 0) -> Samples:
    """``n`` samples for each prompt (prompt-major order: all samples of prompt 0 first).

    A completion cut by ``max_new_tokens`` keeps its tokens, has no EOS and is marked ``truncated``.
    """
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    repeated = [p for p in prompts for _ in range(n)]
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id] for p in repeated]
    completion_ids = []
    for start in range(0, len(repeated), batch_size):
        completion_ids += generate_ids(model, prompt_ids[start:start + batch_size], tokenizer.eos_token_id,
                                       tokenizer.pad_token_id, max_new_tokens, temperature, top_k, top_p, generator)
    model.train(was_training)
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    truncated = [not ids or ids[-1] != tokenizer.eos_token_id for ids in completion_ids]
    return Samples(repeated, prompt_ids, completion_ids, texts, truncated)


def _sample_batches(samples: Samples, pad_token_id: int, batch_size: int, device):
    """Yield ``(indices, batch)`` over the samples that have at least one completion token."""
    rows = [i for i, c in enumerate(samples.completion_ids) if c]
    for start in range(0, len(rows), batch_size):
        idx = rows[start:start + batch_size]
        batch = pad_batch([(samples.prompt_ids[i], samples.completion_ids[i]) for i in idx], pad_token_id)
        yield idx, {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def score_samples(model, tokenizer, samples: Samples, batch_size: int = 128,
                  temperature: float = 1.0, chunk_size: int | None = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """log pi(completion | prompt) of every sample, summed over its tokens.

    ``temperature`` scores under softmax(logits / T), the distribution samples drawn at
    temperature T came from. A sample with no tokens at all (``max_new_tokens=0``) has
    log-probability 0. The sampled ids are scored, so ``tokenizer`` only gives the pad id.
    """
    out = torch.zeros(len(samples.prompts))
    device = next(model.parameters()).device
    for idx, batch in _sample_batches(samples, tokenizer.pad_token_id, batch_size, device):
        out[idx] = sequence_logprobs(model, **batch, temperature=temperature, chunk_size=chunk_size).float().cpu()
    return out


@torch.no_grad()
def token_kl_samples(policy, ref_model, tokenizer, samples: Samples, batch_size: int = 128) -> torch.Tensor:
    """sum_t KL(pi(.|x, y_<t) || pi_ref(.|x, y_<t)) over the positions of each sample.

    Each next-token KL is exact, summed over the whole vocabulary; :func:`dpo_lab.logprobs.token_kl`
    computes it a chunk of positions at a time, so no full-vocabulary float32 logits of the batch
    are held at once.
    """
    out = torch.zeros(len(samples.prompts))
    device = next(policy.parameters()).device
    for idx, batch in _sample_batches(samples, tokenizer.pad_token_id, batch_size, device):
        out[idx] = token_kl(policy, ref_model, **batch).float().cpu()
    return out


def kl_to_reference(policy, ref_model, tokenizer, samples: Samples, method: str = "tokens") -> float:
    """Monte-Carlo estimate of the sequence-level KL(pi || pi_ref), from samples of pi.

    ``method`` is ``"tokens"`` (exact next-token KL summed along each sample; low variance)
    or ``"logratio"`` (the sampled log-ratio); see the module docstring.
    """
    if method == "tokens":
        return token_kl_samples(policy, ref_model, tokenizer, samples).mean().item()
    if method == "logratio":
        log_ratio = score_samples(policy, tokenizer, samples) - score_samples(ref_model, tokenizer, samples)
        return log_ratio.mean().item()
    raise ValueError(f"method must be 'tokens' or 'logratio', got {method!r}")


def pairwise_wins(margin):
    """Per comparison: 1 where ``margin > 0``, 1/2 where it is 0 (a tie counts one half), 0 below.

    The course's one rule for ties: win rates, preference accuracies and the implicit reward's
    accuracy all average it. Works on NumPy arrays and on tensors.
    """
    return (margin > 0) * 1.0 + 0.5 * (margin == 0)


def win_rate(a: np.ndarray, b: np.ndarray) -> float:
    """Share of paired comparisons that ``a`` wins, a tie counting one half."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"win_rate needs paired scores, got shapes {a.shape} and {b.shape}")
    return float(np.mean(pairwise_wins(a - b)))
