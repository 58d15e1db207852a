"""Preference losses: DPO and the variants built on it.

All losses take *summed* (or, for IPO, length-averaged) log-probabilities of
each completion under the policy and under the frozen reference, one number a
pair, and return one loss a pair so the caller decides how to reduce.

Notation (Rafailov et al., 2023, "Direct Preference Optimization", eq. 7):

    chosen log-ratio    h_w = log pi(y_w|x) - log pi_ref(y_w|x)
    rejected log-ratio  h_l = log pi(y_l|x) - log pi_ref(y_l|x)
    Delta = h_w - h_l
    implicit reward     r_hat(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))

The DPO loss is -log sigma(beta * Delta): the Bradley-Terry likelihood of the
observed preference when the reward is the implicit reward.

Two reference-free variants follow :func:`dpo_loss`: :func:`simpo_loss` (SimPO) and
:func:`orpo_loss` (ORPO). They take the policy's per-token mean log-probs only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "robust", "hinge", "ipo")


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One preference loss a pair, and the implicit rewards of chosen and rejected.

    ``loss_type``:

    * ``"sigmoid"``: DPO, ``-log sigma(beta*Delta)`` (Rafailov et al., 2023, eq. 7).
      With ``label_smoothing = eps > 0`` it is conservative DPO (cDPO, Mitchell 2023),
      the expected loss when each label is flipped with probability eps:
      ``-(1-eps) log sigma(beta*Delta) - eps log sigma(-beta*Delta)``.
    * ``"robust"``: robust DPO (Chowdhury et al., 2024), an unbiased loss under
      label noise eps: ``(-(1-eps) log sigma(beta*Delta) + eps log sigma(-beta*Delta)) / (1-2eps)``.
    * ``"hinge"``: SLiC-HF's hinge (Zhao et al., 2023), ``relu(1 - beta*Delta)``.
    * ``"ipo"``: IPO (Azar et al., 2023), ``(Delta - 1/(2 beta))**2``. It regresses the
      log-ratio gap to a finite target instead of pushing it to infinity; feed it
      *length-averaged* log-probs to match TRL.

    Returns ``(losses, chosen_rewards, rejected_rewards)``, each of shape ``(batch,)``;
    the rewards are ``beta * (policy - reference)`` log-probs, detached (they are
    for logging, not for gradients).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r} is not one of {LOSS_TYPES}")
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")

    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    delta = chosen_logratios - rejected_logratios
    eps = label_smoothing

    if loss_type == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(beta * delta) - eps * F.logsigmoid(-beta * delta)
    elif loss_type == "robust":
        losses = (-(1 - eps) * F.logsigmoid(beta * delta) + eps * F.logsigmoid(-beta * delta)) / (1 - 2 * eps)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * delta)
    else:  # ipo
        losses = (delta - 1 / (2 * beta)) ** 2

    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    return losses, chosen_rewards, rejected_rewards


def nll_loss(chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor) -> torch.Tensor:
    """The NLL-on-chosen term that DPO+NLL adds (Pang et al., 2024, "Iterative RPO").

    ``-log pi(y_w|x) / |y_w|``: the negative log-likelihood of the chosen completion
    per token, one value a pair. Add ``alpha * nll_loss(...)`` to the DPO loss to
    keep the chosen likelihood from falling.
    """
    return -chosen_logps / chosen_lengths.clamp(min=1).to(chosen_logps.dtype)


# --- reference-free variants: no pi_ref in the loss ----------------------------------
# Both take *length-averaged* log-probs, (1/|y|) log pi(y|x), one number a completion.


def simpo_loss(policy_chosen_avg_logps: torch.Tensor, policy_rejected_avg_logps: torch.Tensor,
               beta: float = 2.0, gamma: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO (Meng, Xia and Chen, 2024, "SimPO: Simple Preference Optimization with a
    Reference-Free Reward", eq. 6).

    The reward is the policy's own *per-token* log-likelihood, ``r(x, y) = beta/|y| log pi(y|x)``,
    with no reference model; a target margin ``gamma > 0`` asks the chosen reward to beat
    the rejected one by at least gamma:

        L = -log sigma( beta * (avg_w - avg_l) - gamma )

    Averaging over tokens is the point: a summed log-prob rewards a completion for being
    short or long (every extra token changes it), a per-token one does not.

    Returns ``(losses, chosen_rewards, rejected_rewards)``; the rewards are
    ``beta * avg_logp``, detached.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if gamma < 0:
        raise ValueError(f"gamma (the target margin) must be >= 0, got {gamma}")
    logits = beta * (policy_chosen_avg_logps - policy_rejected_avg_logps) - gamma
    losses = -F.logsigmoid(logits)
    return losses, beta * policy_chosen_avg_logps.detach(), beta * policy_rejected_avg_logps.detach()


def log_odds(avg_logps: torch.Tensor) -> torch.Tensor:
    """``log(p / (1 - p))`` with ``p = exp(avg_logp)``, the per-token likelihood of a completion.

    Written as ``avg_logp - log(1 - exp(avg_logp))`` with ``log1p`` so it stays accurate;
    ``avg_logp`` must be < 0 (p < 1), which any real completion's is.
    """
    if (avg_logps >= 0).any():
        raise ValueError("log_odds needs average log-probs below 0 (a probability below 1)")
    return avg_logps - torch.log1p(-torch.exp(avg_logps))


def orpo_loss(policy_chosen_avg_logps: torch.Tensor, policy_rejected_avg_logps: torch.Tensor,
              lam: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ORPO (Hong, Lee and Thorne, 2024, "ORPO: Monolithic Preference Optimization without
    Reference Model", eqs. 6-7).

    SFT and preference learning in one loss, without a reference model. With
    ``p(y|x) = exp(avg_logp)`` (the per-token likelihood) and ``odds(y|x) = p / (1 - p)``:

        L = -avg_w  +  lam * ( -log sigma( log odds(y_w|x) - log odds(y_l|x) ) )

    The first term is the SFT (NLL) loss on the chosen completion, per token; the second
    is the odds-ratio term, which pushes the odds of the chosen above those of the rejected.
    ``lam`` (the paper's lambda, TRL's ``beta``) weighs the two.

    Returns ``(losses, chosen_rewards, rejected_rewards)``, the rewards being
    ``lam * avg_logp`` (as TRL logs them), detached.
    """
    if lam <= 0:
        raise ValueError(f"lam must be positive, got {lam}")
    ratio = log_odds(policy_chosen_avg_logps) - log_odds(policy_rejected_avg_logps)
    losses = -policy_chosen_avg_logps - lam * F.logsigmoid(ratio)
    return losses, lam * policy_chosen_avg_logps.detach(), lam * policy_rejected_avg_logps.detach()
