"""A tiny DDPM and the Diffusion-DPO loss that aligns it to preferences.

Read top to bottom: the noise schedule, the forward (noising) process, the
training step, the ancestral sampler, then Diffusion-DPO. The denoisers (a residual
MLP for 8x8 digits, a small UNet for 28x28 MNIST) are in :mod:`dpo_lab.denoisers`.

Notation (Ho et al., 2020, "Denoising Diffusion Probabilistic Models"), with the
paper's steps t = 1..T stored at indices 0..T-1:

    beta_t                 the noise added at step t
    alpha_t = 1 - beta_t
    alpha_bar_t = prod_{s<=t} alpha_s
    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)       (Ho eq. 4)

The denoiser eps_theta(x_t, t, c) predicts the noise that made x_t from x_0, for
a class label c. Its per-sample squared error

    err_theta(x_0, t, eps) = || eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t, c) ||^2

is both the DDPM training loss (Ho eq. 14, "L_simple") and, compared with the
reference model's, the whole of Diffusion-DPO (Wallace et al., 2023, eq. 14).
Here ||.||^2 is the *mean* over pixels, as in the official Diffusion-DPO code and
in diffusers (a sum would only rescale beta by the number of pixels).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from dpo_lab.evaluate import pairwise_wins
from dpo_lab.precision import backward_and_step, resolve_precision
from dpo_lab.progress import progress as progress_bar
from dpo_lab.train import check_finite, run_callback

# ----------------------------------------------------------------------------
# Noise schedule and forward process
# ----------------------------------------------------------------------------


@dataclass
class NoiseSchedule:
    """``betas``, ``alphas`` and ``alpha_bars`` of a DDPM, one entry a step (float32)."""

    betas: torch.Tensor

    def __post_init__(self):
        self.betas = self.betas.to(torch.float32)
        if self.betas.ndim != 1 or len(self.betas) == 0:
            raise ValueError("betas must be a non-empty 1-D tensor")
        if not bool(((self.betas > 0) & (self.betas < 1)).all()):
            raise ValueError("every beta must lie in (0, 1)")
        # Products in float64 so long schedules keep their precision.
        alphas = 1.0 - self.betas.double()
        self.alphas = alphas.float()
        self.alpha_bars = torch.cumprod(alphas, 0).float()

    @property
    def T(self) -> int:
        return len(self.betas)

    def to(self, device) -> NoiseSchedule:
        out = copy.copy(self)
        out.betas, out.alphas, out.alpha_bars = (v.to(device) for v in (self.betas, self.alphas, self.alpha_bars))
        return out


def linear_schedule(T: int = 100, beta_start: float | None = None, beta_end: float | None = None) -> NoiseSchedule:
    """Ho et al. (2020, sec. 4)'s linear betas, 1e-4 to 0.02 over T = 1000 steps.

    For other T the end points scale by 1000 / T (as in Nichol & Dhariwal, 2021), so
    the total noise, and alpha_bar_T ~ 0, stay about the same: T = 100 gives 1e-3 to 0.2.
    The scaled end point is capped at 0.999 (it would reach 1 at T = 20).
    """
    scale = 1000.0 / T
    beta_start = 1e-4 * scale if beta_start is None else beta_start
    beta_end = min(0.02 * scale, 0.999) if beta_end is None else beta_end
    return NoiseSchedule(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))


def cosine_schedule(T: int = 100, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """Nichol & Dhariwal (2021, eq. 17): alpha_bar_t = f(t) / f(0), f(t) = cos^2((t/T + s)/(1 + s) * pi/2).

    betas are 1 - alpha_bar_t / alpha_bar_{t-1}, clipped at ``max_beta``.
    """
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    betas = [min(1 - f[t + 1] / f[t], max_beta) for t in range(T)]
    return NoiseSchedule(torch.tensor(betas, dtype=torch.float64))


def _per_sample(v: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``v[t]`` shaped to broadcast over a batch of images with ``ndim`` dimensions."""
    return v.to(t.device)[t].reshape(-1, *([1] * (ndim - 1)))


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Ho eq. 4: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps."""
    ab = _per_sample(schedule.alpha_bars, t, x0.ndim)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


# ----------------------------------------------------------------------------
# Training step
# ----------------------------------------------------------------------------


def denoising_errors(model: nn.Module, x0: torch.Tensor, c: torch.Tensor, t: torch.Tensor,
                     noise: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Per-sample ``|| eps - eps_theta(x_t, t, c) ||^2`` (mean over pixels), shape ``(B,)``.

    The summand of Ho et al. (2020) eq. 14 at given ``t`` and ``eps``.
    """
    pred = model(q_sample(x0, t, noise, schedule), t, c)
    return (pred.float() - noise.float()).pow(2).flatten(1).mean(1)


def draw_t_and_noise(x0: torch.Tensor, schedule: NoiseSchedule, generator: torch.Generator | None = None):
    """Uniform timesteps and standard Gaussian noise, drawn on the CPU so a seed gives the same
    draws on every device."""
    t = torch.randint(0, schedule.T, (x0.shape[0],), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    return t.to(x0.device), noise.to(x0.device)


def ddpm_loss(model: nn.Module, x0: torch.Tensor, c: torch.Tensor, schedule: NoiseSchedule,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Ho et al. (2020) eq. 14, L_simple = E_{t, eps} || eps - eps_theta(x_t, t, c) ||^2 (batch mean)."""
    t, noise = draw_t_and_noise(x0, schedule, generator)
    return denoising_errors(model, x0, c, t, noise, schedule).mean()


def _optimize(model, loss_fn, *, steps: int, lr: float, weight_decay: float, device: torch.device,
              precision, desc: str, progress: bool, grad_clip: float | None, cosine: bool,
              callback: Callable[[int, nn.Module], dict | None] | None = None,
              callback_every: int | None = None):
    """The loop both trainers share: AdamW, optional cosine decay, clipping, the course's precision rule.

    ``precision`` is :mod:`dpo_lab.precision`'s (``None``: bf16 where native, fp16 with loss scaling
    on a T4, fp32 on a CPU), carried out by the same tools as every other loop. Steps count from 1
    (the number of updates done); ``callback(step, model)`` runs every ``callback_every`` steps and
    after the last one (:func:`dpo_lab.train.run_callback`, the rule of every loop). Returns the
    history, one row a step."""
    precision = resolve_precision(precision, device)
    scaler = precision.grad_scaler()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    logs: list[dict] = []
    model.train()
    for step in progress_bar(range(1, steps + 1), desc, enabled=progress):
        with precision.autocast():
            loss, metrics = loss_fn(step)
        check_finite(loss, step, desc)
        grad_norm = backward_and_step(loss, opt, model.parameters(), grad_clip, scaler)
        if sched is not None:
            sched.step()
        logs.append({"step": step, "loss": loss.item(), **metrics, "grad_norm": grad_norm.item(),
                     **run_callback(callback, callback_every, step, steps, model)})
    model.eval()
    return pd.DataFrame(logs)


def train_ddpm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, schedule: NoiseSchedule, *,
               steps: int, batch_size: int = 128, lr: float = 2e-3, weight_decay: float = 0.0,
               seed: int = 0, precision=None, grad_clip: float | None = 1.0, cosine: bool = True,
               progress: bool = True, desc: str = "DDPM") -> pd.DataFrame:
    """Train ``model`` in place on ``(images, labels)`` with L_simple (Ho et al. 2020, Algorithm 1).

    Batches, timesteps and noise come from one generator seeded with ``seed``, so a
    run repeats exactly on the CPU. ``precision``: :mod:`dpo_lab.precision`'s (``None``: its rule for the
    model's device). Returns the history: a DataFrame with ``step``, ``loss`` and ``grad_norm``, a row a step.
    """
    device = next(model.parameters()).device
    schedule = schedule.to(device)
    gen = torch.Generator().manual_seed(seed)
    n = images.shape[0]

    def loss_fn(step):
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        x0, c = images[idx].to(device), labels[idx].to(device)
        return ddpm_loss(model, x0, c, schedule, gen), {}

    return _optimize(model, loss_fn, steps=steps, lr=lr, weight_decay=weight_decay, device=device, precision=precision,
                     desc=desc, progress=progress, grad_clip=grad_clip, cosine=cosine)


# ----------------------------------------------------------------------------
# Ancestral sampler
# ----------------------------------------------------------------------------


@torch.no_grad()
def sample(model: nn.Module, schedule: NoiseSchedule, labels: torch.Tensor, *, seed: int = 0,
           clip_x0: bool = True, batch_size: int = 4096) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2), one image a label, in ``[-1, 1]``.

    From x_T ~ N(0, I), for t = T..1:

        x_{t-1} = mu_tilde(x_t, x0_hat) + sigma_t z,   z ~ N(0, I) (z = 0 at the last step)
        x0_hat  = (x_t - sqrt(1 - alpha_bar_t) eps_theta(x_t, t, c)) / sqrt(alpha_bar_t)
        mu_tilde = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x0_hat
                   + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t      (Ho eq. 7)
        sigma_t^2 = beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t

    Without clipping, mu_tilde equals Ho's eq. 11, 1/sqrt(alpha_t) (x_t - beta_t/sqrt(1 - alpha_bar_t) eps_theta).
    With ``clip_x0`` (the default, as in Ho et al.'s code) x0_hat is clipped to [-1, 1] first.

    Every random draw (x_T, then z for each step) comes from a CPU generator seeded with
    ``seed``, in a fixed order, so the same seed and labels give the same images from any
    model: that is what makes same-seed comparisons between two models fair.
    """
    device = next(model.parameters()).device
    labels = labels.to(device)
    gen = torch.Generator().manual_seed(seed)
    shape = (labels.shape[0], *model.image_shape)
    x = torch.randn(shape, generator=gen).to(device)
    sch = schedule.to(device)
    was_training = model.training
    model.eval()
    for i in reversed(range(sch.T)):
        beta, alpha, ab = sch.betas[i], sch.alphas[i], sch.alpha_bars[i]
        ab_prev = sch.alpha_bars[i - 1] if i > 0 else torch.ones((), device=device)
        t = torch.full((shape[0],), i, device=device, dtype=torch.long)
        eps = torch.cat([model(x[j:j + batch_size], t[j:j + batch_size], labels[j:j + batch_size]).float()
                         for j in range(0, shape[0], batch_size)])
        x0_hat = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        if clip_x0:
            x0_hat = x0_hat.clamp(-1, 1)
        mean = ab_prev.sqrt() * beta / (1 - ab) * x0_hat + alpha.sqrt() * (1 - ab_prev) / (1 - ab) * x
        if i > 0:
            var = (1 - ab_prev) / (1 - ab) * beta
            x = mean + var.sqrt() * torch.randn(shape, generator=gen).to(device)
        else:
            x = mean
    model.train(was_training)
    return x.clamp(-1, 1)


# ----------------------------------------------------------------------------
# Diffusion-DPO
# ----------------------------------------------------------------------------


def diffusion_dpo_loss(model_err_w: torch.Tensor, model_err_l: torch.Tensor, ref_err_w: torch.Tensor,
                       ref_err_l: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Diffusion-DPO loss (Wallace et al., 2023, eq. 14), one value a pair.

    Inputs are per-sample denoising errors ``||eps - eps(x_t, t)||^2`` of the winner
    (``_w``) and the loser (``_l``) under the trained model and the frozen reference,
    all at the *same* timestep and noise for the two images of a pair:

        inside = -1/2 * beta * [ (err_theta(x_w) - err_ref(x_w)) - (err_theta(x_l) - err_ref(x_l)) ]
        loss   = -log sigma(inside)

    This is the official code's form (``scale_term = -0.5 * beta_dpo``): the paper's
    T * omega(lambda_t) is folded into beta and the 1/2 comes from the Gaussian KL
    (see the notebook's derivation). diffusers' ``train_diffusion_dpo.py`` writes
    ``-log sigma(beta_d * (ref_diff - model_diff))``, so **diffusers' beta is half of this
    one**: beta_d = beta / 2 gives the same loss.

    ``inside`` is the implicit reward margin: positive when the model has lowered the
    winner's error, relative to the reference, more than the loser's. Returns
    ``(losses, inside, accuracy)``: the per-pair losses, ``inside`` detached, and the
    fraction of pairs with ``inside > 0`` (a tie, such as every pair at the start when the
    model is the reference, counts one half, as in diffusers).
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    model_diff = model_err_w - model_err_l
    ref_diff = ref_err_w - ref_err_l
    inside = -0.5 * beta * (model_diff - ref_diff)
    losses = -F.logsigmoid(inside)
    inside = inside.detach()
    accuracy = pairwise_wins(inside).mean()  # a tie counts one half
    return losses, inside, accuracy


def diffusion_dpo_step(model: nn.Module, ref_model: nn.Module, x_w: torch.Tensor, x_l: torch.Tensor,
                       c: torch.Tensor, schedule: NoiseSchedule, beta: float,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """One Diffusion-DPO loss on a batch of pairs: one (t, eps) a pair, shared by winner and loser.

    Returns the mean loss (with gradients into ``model``) and the logged metrics
    ``rewards/accuracies`` (the share of pairs with ``inside > 0``, ties one half) and ``rewards/margins`` (mean
    ``inside``), TRL's names for the same two quantities, ``model_err_w`` / ``model_err_l`` and
    ``ref_err_w`` / ``ref_err_l``.
    """
    t, noise = draw_t_and_noise(x_w, schedule, generator)
    x = torch.cat([x_w, x_l])
    tt, nn_, cc = torch.cat([t, t]), torch.cat([noise, noise]), torch.cat([c, c])
    model_err_w, model_err_l = denoising_errors(model, x, cc, tt, nn_, schedule).chunk(2)
    with torch.no_grad():
        ref_err_w, ref_err_l = denoising_errors(ref_model, x, cc, tt, nn_, schedule).chunk(2)
    losses, inside, acc = diffusion_dpo_loss(model_err_w, model_err_l, ref_err_w, ref_err_l, beta)
    metrics = {
        "rewards/accuracies": acc.item(), "rewards/margins": inside.mean().item(),
        "model_err_w": model_err_w.mean().item(), "model_err_l": model_err_l.mean().item(),
        "ref_err_w": ref_err_w.mean().item(), "ref_err_l": ref_err_l.mean().item(),
    }
    return losses.mean(), metrics


def train_diffusion_dpo(model: nn.Module, ref_model: nn.Module, x_w: torch.Tensor, x_l: torch.Tensor,
                        c: torch.Tensor, schedule: NoiseSchedule, *, beta: float, steps: int,
                        batch_size: int = 64, lr: float = 1e-4, weight_decay: float = 0.0, seed: int = 0,
                        precision=None, grad_clip: float | None = 1.0, cosine: bool = False,
                        progress: bool = True, desc: str = "Diffusion-DPO",
                        callback: Callable[[int, nn.Module], dict | None] | None = None,
                        callback_every: int | None = None) -> pd.DataFrame:
    """Train ``model`` in place with Diffusion-DPO on pairs ``(x_w[i], x_l[i])`` of class ``c[i]``.

    ``ref_model`` stays frozen. Batches, timesteps and noise come from one generator
    seeded with ``seed``; ``precision`` as :func:`train_ddpm`. ``callback(step, model)`` runs every
    ``callback_every`` steps and after the last (for evaluating during training; a dict it returns
    joins that step's row). Returns the history, a row a step.
    """
    device = next(model.parameters()).device
    schedule = schedule.to(device)
    ref_model.eval()
    gen = torch.Generator().manual_seed(seed)
    n = x_w.shape[0]

    def loss_fn(step):
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        return diffusion_dpo_step(model, ref_model, x_w[idx].to(device), x_l[idx].to(device),
                                  c[idx].to(device), schedule, beta, gen)

    return _optimize(model, loss_fn, steps=steps, lr=lr, weight_decay=weight_decay, device=device, precision=precision,
                     desc=desc, progress=progress, grad_clip=grad_clip, cosine=cosine,
                     callback=callback, callback_every=callback_every)


@torch.no_grad()
def implicit_reward(model: nn.Module, ref_model: nn.Module, x0: torch.Tensor, c: torch.Tensor,
                    schedule: NoiseSchedule, beta: float, *, n_draws: int = 32, seed: int = 0,
                    batch_size: int = 4096) -> torch.Tensor:
    """The Diffusion-DPO implicit reward of each image, shape ``(N,)`` (Wallace et al., 2023, sec. 4-5).

    DPO's implicit reward beta * log p_theta(x | c) / p_ref(x | c), with the log ratio replaced
    by the same ELBO terms as in :func:`diffusion_dpo_loss`, averaged over ``n_draws`` timesteps
    and noises:

        r(x, c) = -1/2 * beta * mean_k [ err_theta(x, t_k, eps_k) - err_ref(x, t_k, eps_k) ]

    so that ``r(x_w) - r(x_l)`` is the loss's ``inside``, averaged over draws. The draws come from
    a CPU generator seeded with ``seed``, draw k of image i depending only on (seed, k, i): call
    it with the same seed on the winners and on the losers of a list of pairs, and each pair shares
    its t and eps as in training (lower variance). Compare ``r(x_w) > r(x_l)`` with the preference
    to measure how well the trained model ranks held-out pairs.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if n_draws < 1:
        raise ValueError(f"n_draws must be at least 1, got {n_draws}")
    device = next(model.parameters()).device
    sch = schedule.to(device)
    gen = torch.Generator().manual_seed(seed)
    gaps = torch.zeros(x0.shape[0])
    for _ in range(n_draws):
        t, noise = draw_t_and_noise(x0, sch, gen)
        for j in range(0, x0.shape[0], batch_size):
            sl = slice(j, j + batch_size)
            args = (x0[sl].to(device), c[sl].to(device), t[sl].to(device), noise[sl].to(device), sch)
            gaps[sl] += (denoising_errors(model, *args) - denoising_errors(ref_model, *args)).cpu()
    return -0.5 * beta * gaps / n_draws
