"""Best-of-N sampling: draw N completions, keep the one a reward function likes best.

No training at all: the policy is the reference pi_ref, filtered at inference time. Its
KL from the reference has a closed-form bound (Stiennon et al., 2020, appendix G.3;
Beirami et al., 2024, "Theoretical guarantees on the best-of-n alignment policy", who
show it is an upper bound, exact when the N samples are all distinct):

    KL(pi_bon || pi_ref) <= log N - (N - 1) / N

so best-of-64 costs at most 3.17 nats, however good its reward. What it costs instead is
N samples and N reward evaluations for *every* prompt, at every use.

Evaluating many N from one set of M >= N samples a prompt (Nakano et al., 2021; Gao et
al., 2023, "Scaling laws for reward model overoptimization"): sort the M samples by the
selecting reward, ascending, ranks i = 1..M. The chance that the sample of rank i is the
best of a uniformly random N-subset is C(i-1, N-1) / C(M, N), so

    E[value of the best of N] ~ sum_i C(i-1, N-1) / C(M, N) * value_i

is an unbiased estimate that uses all M samples instead of one subset.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def kl_bound(n):
    """log N - (N - 1) / N, the KL of best-of-N from its reference (an upper bound); N >= 1."""
    n_arr = np.asarray(n, dtype=float)
    if np.any(n_arr < 1):
        raise ValueError(f"best-of-N needs N >= 1, got {n}")
    out = np.log(n_arr) - (n_arr - 1) / n_arr
    return float(out) if out.ndim == 0 else out


def best_of_n_weights(m: int, n: int) -> np.ndarray:
    """Weight of each rank (ascending, 1..m) in the best-of-n estimate from m samples.

    w_i = C(i-1, n-1) / C(m, n): the probability that the i-th smallest of m is the largest of a
    uniformly random n-subset. The weights sum to 1.
    """
    if not 1 <= n <= m:
        raise ValueError(f"best-of-{n} needs 1 <= n <= m samples a prompt, got m={m}")
    total = math.comb(m, n)
    return np.array([math.comb(i - 1, n - 1) / total for i in range(1, m + 1)])


def expected_best_of_n(select_scores, values, n: int) -> np.ndarray:
    """Unbiased estimate, per prompt, of the value of the sample best-of-n picks.

    ``select_scores`` and ``values`` are ``(prompts, m)`` arrays over the same m samples a
    prompt: the reward that selects (a reward model) and the value measured (the gold
    reward). Ties in the selecting score are broken by sample order. Returns ``(prompts,)``.
    """
    select_scores, values = np.asarray(select_scores, dtype=float), np.asarray(values, dtype=float)
    if select_scores.shape != values.shape or select_scores.ndim != 2:
        raise ValueError(f"select_scores {select_scores.shape} and values {values.shape} must be the same "
                         "(prompts, samples) shape")
    order = np.argsort(select_scores, axis=1, kind="stable")
    ranked = np.take_along_axis(values, order, axis=1)
    return ranked @ best_of_n_weights(select_scores.shape[1], n)


def best_of_n_curve(select_scores, values, ns) -> pd.DataFrame:
    """One row a N: ``n``, ``kl`` (the bound), ``value`` (mean over prompts of :func:`expected_best_of_n`)."""
    return pd.DataFrame([{"n": int(n), "kl": kl_bound(n), "value": float(expected_best_of_n(select_scores, values,
                                                                                            int(n)).mean())}
                         for n in ns])


def best_of_n(model, tokenizer, prompts: list[str], n: int, reward_fn, max_new_tokens: int = 32,
              temperature: float = 1.0, batch_size: int = 256, seed: int = 0) -> dict:
    """Best-of-N sampling: ``n`` completions a prompt from ``model``, the best under ``reward_fn``.

    ``reward_fn`` is any callable ``texts -> array`` scoring prompt + completion. Returns
    ``{"texts", "scores", "samples", "all_scores"}``: the chosen completion and its score per
    prompt, all samples (:class:`dpo_lab.evaluate.Samples`, prompt-major) and all their
    scores as a ``(prompts, n)`` array, so other values can be read off the same draw.
    """
    from dpo_lab.evaluate import sample

    samples = sample(model, tokenizer, prompts, n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                     batch_size=batch_size, seed=seed)
    scores = np.asarray(reward_fn([p + t for p, t in zip(samples.prompts, samples.texts)]), dtype=float)
    scores = scores.reshape(len(prompts), n)
    best = scores.argmax(1)
    texts = [samples.texts[i * n + b] for i, b in enumerate(best)]
    return {"texts": texts, "scores": scores.max(1), "samples": samples, "all_scores": scores}
