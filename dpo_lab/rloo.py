"""RLOO: REINFORCE with a leave-one-out baseline, the online RL baseline of the RLHF pipeline.

Objective (the one DPO solves in closed form, Rafailov et al., 2023, eq. 3):

    max_pi  E_{x, y ~ pi} [ R(x, y) ] - beta * KL(pi || pi_ref)

RLOO (Kool et al., 2019; Ahmadian et al., 2024, "Back to basics: revisiting REINFORCE
style optimization for learning from human feedback in LLMs") treats a whole completion
as one action. For each prompt it samples k completions y_1..y_k and gives each the
KL-penalised reward

    r_i = R(x, y_i) - beta * (log pi(y_i|x) - log pi_ref(y_i|x))

(the sampled log-ratio is a one-sample estimate of the KL). The baseline of sample i is
the mean reward of the *other* k - 1 samples of the same prompt, so no value network
(PPO's critic) is needed and the baseline does not depend on y_i (the gradient stays
unbiased):

    A_i = r_i - (1 / (k - 1)) * sum_{j != i} r_j

and the loss is the REINFORCE surrogate, whose gradient is the policy gradient:

    L = -(1 / (B k)) * sum_i A_i * log pi(y_i | x)      (A_i held constant)

``R`` is any callable ``texts -> numpy array``: a learned reward model (the RLHF
pipeline) or the task's gold reward (an oracle upper bound).

Sampling temperature. Samples drawn at temperature T come from pi_T = softmax(logits / T),
not from pi, so every log pi above is log pi_T: the policy's log-probs in the gradient
(REINFORCE needs the log-prob of the distribution that drew the sample) and both sides
of the KL penalty (the reference's logits are divided by the same T, as TRL does). With
T = 1 this is the model itself.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from dpo_lab.collate import pad_batch
from dpo_lab.evaluate import sample, score_samples
from dpo_lab.logprobs import DEFAULT_CHUNK_SIZE, sequence_logprobs
from dpo_lab.precision import clip_and_step, resolve_precision, scaled_backward
from dpo_lab.progress import progress as progress_bar
from dpo_lab.train import accumulate, check_finite, check_micro_batch_size, micro_batches, run_callback


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """A_i = r_i - mean of the other k - 1 rewards of the same prompt; ``rewards`` is ``(prompts, k)``.

    Equivalently A_i = k / (k - 1) * (r_i - mean_j r_j): the advantages of a prompt sum to 0.
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"RLOO needs rewards of shape (prompts, k) with k >= 2 samples a prompt, "
                         f"got {tuple(rewards.shape)}")
    k = rewards.shape[1]
    baseline = (rewards.sum(1, keepdim=True) - rewards) / (k - 1)
    return rewards - baseline


def kl_penalized_rewards(scores: torch.Tensor, policy_logps: torch.Tensor, ref_logps: torch.Tensor,
                         kl_coef: float) -> torch.Tensor:
    """r = R(x, y) - beta * (log pi(y|x) - log pi_ref(y|x)), one a sample (no gradient flows)."""
    return scores - kl_coef * (policy_logps.detach() - ref_logps)


def rloo_loss(policy_logps: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """The REINFORCE surrogate -mean(A_i * log pi(y_i|x)), advantages held constant."""
    return -(advantages.detach() * policy_logps).mean()


def _prompt_batches(n: int, per_step: int, steps: int, seed: int):
    """``steps`` batches of prompt indices, walking through seeded shuffles of the prompts."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < per_step:
            order += torch.randperm(n, generator=generator).tolist()
        yield order[:per_step]
        order = order[per_step:]


def _sample_logprobs(policy, samples, rows: list[int], pad_token_id: int, temperature: float,
                     chunk_size: int | None) -> torch.Tensor:
    """log pi_T(completion | prompt) of the samples ``rows``, with gradient (the caller sets autocast)."""
    batch = pad_batch([(samples.prompt_ids[i], samples.completion_ids[i]) for i in rows], pad_token_id)
    device = next(policy.parameters()).device
    return sequence_logprobs(policy, **{key: v.to(device) for key, v in batch.items()}, temperature=temperature,
                             chunk_size=chunk_size)


def train_rloo(policy, ref_model, tokenizer, prompts: list[str], reward_fn, *, kl_coef: float = 0.05, k: int = 4,
               steps: int = 50, prompts_per_step: int = 32, lr: float = 1e-4, max_new_tokens: int = 32,
               temperature: float = 1.0, grad_clip: float = 1.0, seed: int = 0, monitor_fn=None,
               callback=None, callback_every: int | None = None, progress: bool = True, desc: str = "RLOO",
               precision=None, chunk_size: int | None = DEFAULT_CHUNK_SIZE,
               micro_batch_size: int | None = None) -> pd.DataFrame:
    """Train ``policy`` with RLOO against ``reward_fn`` and a KL penalty to the frozen ``ref_model``.

    Each step samples ``k`` completions for each of ``prompts_per_step`` prompts from the
    current policy, scores them, and takes one gradient step on :func:`rloo_loss`.

    Returns one row a step: ``loss``, ``reward/proxy`` (mean ``reward_fn`` score of the
    step's samples), ``reward/total`` (after the KL penalty), ``kl`` (mean sampled log-ratio,
    nats a completion), ``length`` (completion tokens), ``grad_norm``, ``samples`` (completions
    sampled so far) and, when ``monitor_fn`` is given (a gold reward, for watching
    over-optimisation; it never enters the gradient), ``reward/gold`` on the same samples.
    ``callback(step, policy)`` runs every ``callback_every`` steps and after the last; a dict it
    returns is merged into that step's row, and the seconds it took are logged as
    ``callback_seconds`` so training time can be told apart from evaluation time (the rule of
    every loop: :func:`dpo_lab.train.run_callback`). Steps count from 1.

    Samples are scored at the ``temperature`` they were drawn at (see the module docstring).
    ``precision`` (``None``: decided from the policy's device, see :mod:`dpo_lab.precision`):
    the policy's and the reference's forward passes run under its autocast, the step through
    its gradient scaler. ``chunk_size``: of :func:`dpo_lab.logprobs.sequence_logprobs` (``None``:
    the plain full-logits path).

    ``micro_batch_size``: sampled completions a forward/backward pass (a step has
    ``prompts_per_step * k`` of them; gradient accumulation, see :func:`dpo_lab.train.micro_batches`;
    ``None``: all at once). The KL penalty and the leave-one-out baseline are computed over the
    whole step first (the baseline needs all k samples of a prompt), from log-probs of a forward
    pass without gradient; then the policy's log-probs are recomputed, with gradient, a micro-batch
    at a time for the backward. Reference log-probs are computed a micro-batch at a time too;
    sampling is not split (its batch is the whole step).
    """
    check_micro_batch_size(micro_batch_size)
    if k < 2:
        raise ValueError(f"RLOO needs k >= 2 samples a prompt for its leave-one-out baseline, got k={k}")
    if not prompts:
        raise ValueError("train_rloo needs at least one prompt")
    device = next(policy.parameters()).device
    precision = resolve_precision(precision, device)
    scaler = precision.grad_scaler()
    ref_model.eval()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr)
    rows, n_samples = [], 0
    batches = list(_prompt_batches(len(prompts), min(prompts_per_step, len(prompts)), steps, seed))
    for step, idx in enumerate(progress_bar(batches, desc, enabled=progress), start=1):
        # 1. sample k completions a prompt from the current policy (prompt-major order)
        batch_prompts = [prompts[i] for i in idx]
        samples = sample(policy, tokenizer, batch_prompts, n=k, max_new_tokens=max_new_tokens,
                         temperature=temperature, batch_size=len(batch_prompts) * k, seed=seed * 100_003 + step - 1)
        if any(not c for c in samples.completion_ids):
            raise ValueError(f"{desc}: step {step} sampled an empty completion; max_new_tokens must be >= 1")
        n_samples += len(samples.texts)
        texts = [p + t for p, t in zip(samples.prompts, samples.texts)]
        scores = torch.as_tensor(np.asarray(reward_fn(texts), dtype=np.float32))
        # 2. log-probs of the sampled ids: the reference's (constants) and the policy's
        #    under pi_T, the distribution the samples were drawn from
        micros = list(micro_batches(list(range(len(texts))), micro_batch_size))
        with precision.autocast():
            ref_logps = score_samples(ref_model, tokenizer, samples,
                                      batch_size=micro_batch_size or len(texts), temperature=temperature,
                                      chunk_size=chunk_size).to(device)
            policy.train()
            if len(micros) == 1:  # one pass: its forward, with gradient, also gives the KL penalty's log-probs
                policy_logps = _sample_logprobs(policy, samples, micros[0][0], tokenizer.pad_token_id,
                                                temperature, chunk_size)
                sampled_logps = policy_logps.detach()
            else:  # the penalty and the baseline need every sample's log-prob before any backward
                sampled_logps = score_samples(policy, tokenizer, samples, batch_size=micro_batch_size,
                                              temperature=temperature, chunk_size=chunk_size).to(device)
        # 3. KL-penalised rewards and leave-one-out advantages, over each prompt's k samples
        rewards = kl_penalized_rewards(scores.to(device), sampled_logps, ref_logps, kl_coef)
        advantages = rloo_advantages(rewards.view(len(idx), k)).view(-1)
        # 4. the REINFORCE step, its backward a micro-batch at a time (the loss is a mean over samples)
        optimizer.zero_grad(set_to_none=True)
        loss = None
        for micro, share in micros:
            if len(micros) > 1:
                with precision.autocast():
                    policy_logps = _sample_logprobs(policy, samples, micro, tokenizer.pad_token_id,
                                                    temperature, chunk_size)
            micro_loss = share * rloo_loss(policy_logps, advantages[micro])  # its term of the step's loss
            scaled_backward(micro_loss, scaler)
            loss = accumulate(loss, micro_loss.detach())
        check_finite(loss, step, desc)
        grad_norm = clip_and_step(optimizer, policy.parameters(), grad_clip, scaler)
        kl = (sampled_logps - ref_logps).mean().item()
        length = torch.tensor([len(c) for c in samples.completion_ids]).float().mean().item()
        row = {"step": step, "loss": loss.item(), "reward/proxy": scores.mean().item(),
               "reward/total": rewards.mean().item(), "kl": kl, "length": length,
               "grad_norm": grad_norm.item(), "samples": n_samples}
        if monitor_fn is not None:
            row["reward/gold"] = float(np.mean(monitor_fn(texts)))
        row.update(run_callback(callback, callback_every, step, len(batches), policy))
        rows.append(row)
    policy.eval()
    return pd.DataFrame(rows)
