"""Tools to reproduce and diagnose the ways preference optimisation fails.

Used by notebook 08. Each helper is small and works on the course's plain pair
records (``prompt`` / ``chosen`` / ``rejected``) and on precomputed reference
log-probs, so an experiment can reuse one cached set of reference log-probs
(a flipped or sub-sampled pair set needs no new reference pass).

* label noise: :func:`flip_labels`, :func:`swap_where`
* length confounds: :func:`split_by_length`
* off-policy pairs: :func:`pairs_from_reviews` (pairs from texts another model wrote)
* likelihood displacement, "where the mass goes": :func:`mass_shift` (per completion:
  :func:`mass_per_completion`), :func:`top_mass_changes`
* degenerate text that a word-counting gold reward does not see: :func:`known_word_share`
  (per text: :func:`known_word_counts`)
"""

from __future__ import annotations

import random
import re

import numpy as np
import pandas as pd
import torch

from dpo_lab.logprobs import position_ids_from_mask


def flip_labels(pairs: list[dict], rate: float, seed: int = 0) -> tuple[list[dict], torch.Tensor]:
    """Swap chosen and rejected in a random ``rate`` share of the pairs (exactly round(rate * n)).

    Simulates annotators who pick the wrong completion. Returns the new pairs and a
    boolean mask of the flipped ones.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"flip rate must be in [0, 1], got {rate}")
    n = len(pairs)
    flipped = set(random.Random(seed).sample(range(n), int(round(rate * n))))
    out = [dict(p, chosen=p["rejected"], rejected=p["chosen"]) if i in flipped else dict(p)
           for i, p in enumerate(pairs)]
    for i in flipped:  # keep the bookkeeping fields consistent with the new labels
        if "chosen_reward" in out[i]:
            out[i]["chosen_reward"], out[i]["rejected_reward"] = out[i]["rejected_reward"], out[i]["chosen_reward"]
    return out, torch.tensor([i in flipped for i in range(n)], dtype=torch.bool)


def swap_where(ref_logps: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference log-probs ``(chosen, rejected)`` with the two swapped where ``mask`` is true.

    The reference log-probs of a flipped pair are those of the unflipped pair, swapped:
    no new reference pass is needed.
    """
    chosen, rejected = ref_logps
    if len(mask) != len(chosen):
        raise ValueError(f"mask has {len(mask)} rows but ref_logps has {len(chosen)}")
    return torch.where(mask, rejected, chosen), torch.where(mask, chosen, rejected)


def split_by_length(chosen_lengths, rejected_lengths, min_gap: int = 3) -> dict[str, list[int]]:
    """Indices of pairs whose chosen completion is longer / shorter by at least ``min_gap`` tokens.

    Keeping only one side builds a data set in which length and preference are confounded,
    as in real preference data where the preferred answers tend to be longer.
    """
    chosen_lengths, rejected_lengths = np.asarray(chosen_lengths), np.asarray(rejected_lengths)
    gap = chosen_lengths - rejected_lengths
    return {"chosen longer": np.flatnonzero(gap >= min_gap).tolist(),
            "chosen shorter": np.flatnonzero(gap <= -min_gap).tolist()}


def pairs_from_reviews(texts: list[str], gold, n_words: int = 3, seed: int = 0, limit: int | None = None) -> list[dict]:
    """Preference pairs from whole reviews written by someone else (off-policy data).

    Reviews are grouped by their first ``n_words`` words (the prompt); within a group
    they are shuffled and paired two by two, and the one with the higher gold reward is
    ``chosen``. Ties and empty completions give no pair.
    """
    groups: dict[str, list[str]] = {}
    for text in texts:
        words = text.split()
        if len(words) <= n_words:
            continue
        prompt = " ".join(words[:n_words])
        groups.setdefault(prompt, []).append(text[len(prompt):])
    rng = random.Random(seed)
    candidates = []
    for prompt in sorted(groups):
        completions = groups[prompt]
        rng.shuffle(completions)
        candidates += [(prompt, a, b) for a, b in zip(completions[::2], completions[1::2])]
    rng.shuffle(candidates)
    scores = np.asarray(gold([p + c for p, a, b in candidates for c in (a, b)])).reshape(-1, 2)
    pairs = []
    for (prompt, a, b), (score_a, score_b) in zip(candidates, scores):
        if score_a == score_b or not a.strip() or not b.strip():
            continue
        first = score_a > score_b
        pairs.append({"prompt": prompt, "chosen": a if first else b, "rejected": b if first else a,
                      "chosen_reward": float(max(score_a, score_b)), "rejected_reward": float(min(score_a, score_b))})
        if limit is not None and len(pairs) == limit:
            break
    return pairs


def _chunks(batch: dict, rows: int):
    """The batch cut into pieces of ``rows`` rows: a full next-token distribution over a large
    vocabulary (50k for GPT-2) is big, so it is never held for the whole batch at once."""
    for start in range(0, batch["input_ids"].shape[0], rows):
        yield {k: v[start:start + rows] for k, v in batch.items()}


@torch.no_grad()
def _next_token_probs(model, batch: dict) -> torch.Tensor:
    """p(. | x, y_<t) at every position (B, T-1, V), float32."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=position_ids_from_mask(batch["attention_mask"])).logits[:, :-1]
    return logits.float().softmax(-1)


@torch.no_grad()
def mass_per_completion(model, batch: dict, seen_token_ids, chunk_rows: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Next-token probability mass of ``model`` on each completion of ``batch``, split three ways.

    At every completion position the mass is split into: the token the data has there, the
    other tokens ``seen_token_ids``, and tokens never seen. Returns ``(mass, positions)``:
    ``mass`` of shape (rows, 3) sums each share over the completion's positions, ``positions``
    (rows,) counts them, so a share over any set of completions is ``mass.sum(0) / positions.sum()``
    (what :func:`mass_shift` reports, and what a bootstrap over completions resamples).
    """
    mass, positions = [], []
    for chunk in _chunks(batch, chunk_rows):
        probs = _next_token_probs(model, chunk)
        seen_mask = torch.zeros(probs.shape[-1], dtype=torch.bool, device=probs.device)
        seen_mask[torch.as_tensor(sorted(set(seen_token_ids)), dtype=torch.long, device=probs.device)] = True
        mask = chunk["completion_mask"][:, 1:].to(probs.dtype)
        data = probs.gather(-1, chunk["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
        seen = (probs * seen_mask).sum(-1)
        shares = torch.stack([data, seen - data, 1 - seen], dim=-1) * mask.unsqueeze(-1)  # zero off the completion
        mass.append(shares.sum(1).double().cpu())
        positions.append(mask.sum(1).double().cpu())
    return torch.cat(mass).numpy(), torch.cat(positions).numpy()


MASS_COLUMNS = ("data token", "other seen tokens", "never-seen tokens")


@torch.no_grad()
def mass_shift(policy, ref_model, batch: dict, seen_token_ids, chunk_rows: int = 16) -> pd.DataFrame:
    """Where the next-token probability mass sits on completion positions, policy vs reference.

    At every completion position of ``batch`` (a :func:`dpo_lab.collate.pad_batch` batch,
    e.g. the chosen completions) the mass is split three ways: the token the data has
    there, the other tokens ``seen_token_ids`` (every token that occurs in the training
    completions), and tokens never seen in them. Returns one row a model with the mean
    share of each over all completion positions (rows sum to 1).
    """
    rows = {}
    for name, model in (("reference", ref_model), ("policy", policy)):
        mass, positions = mass_per_completion(model, batch, seen_token_ids, chunk_rows)
        rows[name] = dict(zip(MASS_COLUMNS, (mass.sum(0) / positions.sum()).tolist()))
    return pd.DataFrame(rows).T


@torch.no_grad()
def top_mass_changes(policy, ref_model, batch: dict, tokenizer, k: int = 8, chunk_rows: int = 16) -> pd.DataFrame:
    """The ``k`` tokens whose mean next-token probability rose most, and the ``k`` that fell most.

    Averaged over the completion positions of ``batch``; ``change`` is policy minus reference.
    """
    means = []
    for model in (policy, ref_model):
        total, positions = 0.0, 0
        for chunk in _chunks(batch, chunk_rows):
            mask = chunk["completion_mask"][:, 1:].bool()
            total = total + _next_token_probs(model, chunk)[mask].double().sum(0).cpu()
            positions += int(mask.sum())
        means.append((total / positions).float())
    p, q = means
    change = p - q
    order = torch.argsort(change, descending=True)
    picks = torch.cat([order[:k], order[-k:]]).tolist()
    return pd.DataFrame({"token": [repr(tokenizer.decode([i])) for i in picks],
                         "reference": q[picks].numpy(), "policy": p[picks].numpy(),
                         "change": change[picks].numpy()})


_WORDS = re.compile(r"[a-z']+")


def known_word_counts(texts: list[str], reference_texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per text: how many of its words occur somewhere in ``reference_texts`` (lower-cased), and how many words
    it has. Summed over any set of texts they give its known-word share (:func:`known_word_share`), so a
    bootstrap over prompts can resample them."""
    vocabulary = {w for t in reference_texts for w in _WORDS.findall(t.lower())}
    words = [_WORDS.findall(t.lower()) for t in texts]
    return (np.array([sum(w in vocabulary for w in ws) for ws in words], dtype=float),
            np.array([len(ws) for ws in words], dtype=float))


def known_word_share(texts: list[str], reference_texts: list[str]) -> float:
    """Share of the words in ``texts`` that occur somewhere in ``reference_texts`` (lower-cased).

    A cheap well-formedness check: a policy that drifts into byte soup writes non-words,
    which a gold reward that only counts sentiment words does not notice. 1.0 when
    ``texts`` has no words at all.
    """
    known, total = known_word_counts(texts, reference_texts)
    return 1.0 if total.sum() == 0 else float(known.sum() / total.sum())
