"""Training loops as plain functions: SFT and DPO.

No trainer classes: each loop is a ``for`` over shuffled mini-batches that a learner
can read top to bottom. Both return a pandas DataFrame with one row a step, using
the metric names TRL and the literature log:

* ``step``: the number of optimiser updates done, from 1 (every loop of the course counts so)
* ``loss``
* ``rewards/chosen``, ``rewards/rejected``: mean implicit reward beta*log(pi/pi_ref)
* ``rewards/margins``: mean of chosen minus rejected reward
* ``rewards/accuracies``: share of pairs whose chosen reward beats the rejected one
* ``logps/chosen``, ``logps/rejected``: mean summed log-probs under the policy

Precision: every loop takes ``precision`` (``"bf16"``, ``"fp16"``, ``"fp32"`` or ``None``,
the default, for the rule of :mod:`dpo_lab.precision`: bf16 on GPUs where it is native,
fp16 with loss scaling on a T4, fp32 on a CPU), runs its forward pass under autocast and
steps through a gradient scaler (a pass-through except for fp16).
Log-probs are computed chunk by chunk (:mod:`dpo_lab.logprobs`), never as
full-vocabulary float32 logits of the whole batch.

Callbacks: every loop that evaluates along training (:func:`train_dpo`, ``rloo.train_rloo``,
``diffusion.train_diffusion_dpo``) takes ``callback(step, model)`` and ``callback_every``: the
callback runs after every ``callback_every``-th update and after the last one, with the model in
eval mode; a dict it returns is merged into that step's row, and the seconds it took are logged as
``callback_seconds`` (so training time can be told apart from evaluation time). To evaluate the
model before training, call the callback yourself with step 0.

Memory: every loop takes ``micro_batch_size`` (``None``, the default: the batch in one piece).
An optimiser step still sees ``batch_size`` examples, but they go through the model a
micro-batch at a time and their gradients add up (gradient accumulation, see
:func:`micro_batches`), so only one micro-batch's activations are held at once.
"""

from __future__ import annotations

import math
import numbers
import time

import pandas as pd
import torch

from dpo_lab.collate import collate_pairs, encode_examples, encode_pairs, pad_batch
from dpo_lab.logprobs import DEFAULT_CHUNK_SIZE, sequence_logprobs
from dpo_lab.losses import LOSS_TYPES, dpo_loss, nll_loss, orpo_loss, simpo_loss
from dpo_lab.precision import clip_and_step, resolve_precision, scaled_backward
from dpo_lab.progress import progress as progress_bar

# losses that score a completion by its per-token mean log-prob, and those with no reference in them
AVERAGED_LOSSES = ("ipo", "simpo", "orpo")
REFERENCE_FREE_LOSSES = ("simpo", "orpo")


def shuffled_batches(n: int, batch_size: int, epochs: float, seed: int, what: str = "training examples"):
    """Index batches over ``epochs`` passes of a seeded shuffle (a fractional last epoch is cut).

    No data is an error naming ``what`` was empty (an empty list would otherwise never yield a batch).
    """
    if n <= 0:
        raise ValueError(f"nothing to train on: the {what} are empty (0 items)")
    generator = torch.Generator().manual_seed(seed)
    total_steps = max(1, math.ceil(n / batch_size * epochs))
    step = 0
    while step < total_steps:
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, batch_size):
            if step >= total_steps:
                return
            yield order[start:start + batch_size]
            step += 1


def check_micro_batch_size(micro_batch_size) -> int | None:
    """``micro_batch_size`` if it is ``None`` or a positive int; otherwise a ValueError naming it."""
    if micro_batch_size is not None and (isinstance(micro_batch_size, bool)
                                         or not isinstance(micro_batch_size, numbers.Integral)
                                         or micro_batch_size < 1):
        raise ValueError(f"micro_batch_size must be a positive int or None, got {micro_batch_size!r}")
    return micro_batch_size


def micro_batches(idx: list[int], micro_batch_size: int | None):
    """Split one optimiser step's batch ``idx`` into consecutive micro-batches; yields ``(micro, share)``.

    Gradient accumulation. A batch's loss is a sum over its items i (examples, pairs, samples)
    divided by a count N of the *whole* batch (its items for a mean, its tokens for SFT), so it
    is a sum of one term a micro-batch m:

        L = (1/N) sum_i l_i = sum_m L_m,        L_m = (1/N) sum_{i in m} l_i

    The gradient is linear and ``backward`` adds into ``.grad``, so a backward of each L_m in
    turn leaves grad L in ``.grad``, exactly the whole batch's gradient, while only one
    micro-batch's activations are alive at a time; the optimiser then steps once. For a loss
    that is a mean over the items, L_m is the micro-batch's own mean times its ``share``,
    ``len(micro) / len(idx)``; logged means are combined the same way, so they are the whole
    batch's. (Not for a term that couples items, such as a batch norm: none of ours does.)

    ``None`` (or a size of at least ``len(idx)``) gives the batch in one piece with share 1.0,
    the computation without accumulation, bit for bit.
    """
    size = check_micro_batch_size(micro_batch_size) or len(idx)
    for start in range(0, len(idx), size):
        micro = idx[start:start + size]
        yield micro, len(micro) / len(idx)


def accumulate(total, part):
    """``total + part`` for tensors, numbers or dicts of numbers (key by key); ``total`` is ``None``
    before the first micro-batch (then ``part`` itself, so one micro-batch changes no bit)."""
    if total is None:
        return part
    if isinstance(part, dict):
        return {key: total[key] + value for key, value in part.items()}
    return total + part


def check_finite(loss: torch.Tensor, step: int, where: str) -> None:
    """Stop with a clear error when a loss is NaN or infinite (every training loop checks each step)."""
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"{where}: the loss became {loss.item()} at step {step}; lower the learning rate, "
            "raise beta, or check the data for empty completions"
        )


def run_callback(callback, callback_every: int | None, step: int, steps: int, model) -> dict:
    """The callback rule every loop shares (see the module docstring); returns what goes into the step's row.

    ``callback(step, model)`` runs after every ``callback_every``-th update and after the last of
    ``steps``, the model in eval mode (and back in train mode after); its dict, if it returns one,
    and ``callback_seconds`` are returned. Otherwise (no callback, or not its step) an empty dict.
    """
    if callback is None or not ((callback_every and step % callback_every == 0) or step == steps):
        return {}
    model.eval()
    start = time.perf_counter()
    extra = callback(step, model)
    seconds = time.perf_counter() - start
    model.train()
    return {**(extra if isinstance(extra, dict) else {}), "callback_seconds": seconds}


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def train_sft(model, tokenizer, prompts: list[str], completions: list[str], *, epochs: float = 1.0,
              batch_size: int = 16, lr: float = 1e-3, weight_decay: float = 0.0, max_prompt_length=None,
              max_length=None, grad_clip: float = 1.0, seed: int = 0, progress: bool = True,
              desc: str = "SFT", precision=None, chunk_size: int | None = DEFAULT_CHUNK_SIZE,
              micro_batch_size: int | None = None) -> pd.DataFrame:
    """Supervised fine-tuning: minimise the mean NLL of completion tokens given the prompt.

    loss = -(1/N) sum over completion tokens of log pi(y_t | x, y_<t), N tokens in the batch.
    ``precision``: see the module docstring (``None``: decided from the model's device).
    ``chunk_size``: of :func:`dpo_lab.logprobs.sequence_logprobs` (``None``: the plain path).
    ``micro_batch_size``: examples a forward/backward pass (gradient accumulation, see
    :func:`micro_batches`); ``None``: the whole batch at once.
    """
    check_micro_batch_size(micro_batch_size)
    if not prompts or not completions:
        raise ValueError("nothing to train on: the SFT examples are empty (0 items)")
    device = next(model.parameters()).device
    precision = resolve_precision(precision, device)
    scaler = precision.grad_scaler()
    encoded, _ = encode_examples(tokenizer, prompts, completions, max_prompt_length, max_length)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    rows = []
    batches = list(shuffled_batches(len(encoded), batch_size, epochs, seed, what="SFT examples"))
    for step, idx in enumerate(progress_bar(batches, desc, enabled=progress), start=1):
        # N, the completion tokens of the *whole* batch, is counted before it is split: every
        # micro-batch divides its sum by it (a prompt has at least one token, so no completion
        # token sits at position 0, which predicts nothing)
        n_tokens = torch.tensor(sum(len(encoded[i][1]) for i in idx), device=device)
        optimizer.zero_grad(set_to_none=True)
        loss = None
        for micro, _ in micro_batches(idx, micro_batch_size):
            batch = _to(pad_batch([encoded[i] for i in micro], tokenizer.pad_token_id), device)
            with precision.autocast():
                logps = sequence_logprobs(model, **batch, chunk_size=chunk_size)
            micro_loss = -logps.sum() / n_tokens  # this micro-batch's term of the batch's loss
            scaled_backward(micro_loss, scaler)
            loss = accumulate(loss, micro_loss.detach())
        check_finite(loss, step, desc)
        grad_norm = clip_and_step(optimizer, model.parameters(), grad_clip, scaler)
        rows.append({"step": step, "loss": loss.item(), "grad_norm": grad_norm.item()})
    model.eval()
    return pd.DataFrame(rows)


def cached_sft(name: str, spec: dict, cfg: dict, tokenizer, examples, *, device=None, progress: bool = True):
    """An SFT model trained by :func:`train_sft` on ``examples()``, or loaded from ``runs/``.

    The tasks' ``sft_model`` functions call this. The entry ``runs/<name>-<key>`` is keyed on
    ``spec`` (the config values and data version that decide the model), the tokenizer (its files
    if local, its Hub name otherwise) and the source of the code that trains
    (:func:`dpo_lab.cache.code_version`), so nothing stale is ever reused. ``examples()`` returns
    ``(prompts, completions)``; it is only called when the model is built. ``cfg`` keys:
    ``model`` ("tiny" or a Hub id/folder), ``model_sizes``, ``sft_epochs``, ``sft_lr``,
    ``sft_batch_size``, ``max_length``, ``seed``, ``sft_micro_batch`` (optional).

    The model trains on ``device`` (by default :func:`dpo_lab.env.get_device`), the device it will
    be used on, and a cached model is loaded onto it; dropout is off either way. Returns
    ``(model, folder, history)``; ``history`` is ``None`` when the model came from the cache (its
    training curve is ``folder / "sft_history.csv"``).
    """
    from pathlib import Path

    from dpo_lab.cache import SFT_CODE, cached, code_version, file_digest
    from dpo_lab.env import get_device
    from dpo_lab.models import load_model, load_trained

    device = torch.device(device if device is not None else get_device())
    local = Path(tokenizer.name_or_path)
    spec = {**spec, "tokenizer": file_digest(local) if local.exists() else tokenizer.name_or_path,
            "code": code_version(*SFT_CODE)}  # a fix to the training code retrains the model

    def build(folder):
        model = load_model(cfg["model"], tokenizer, seed=cfg["seed"], **(cfg.get("model_sizes") or {})).to(device)
        prompts, completions = examples()
        history = train_sft(model, tokenizer, prompts, completions, epochs=cfg["sft_epochs"], lr=cfg["sft_lr"],
                            batch_size=cfg["sft_batch_size"], max_length=cfg["max_length"], seed=cfg["seed"],
                            progress=progress,
                            # micro-batches change the memory, not the result: not part of the cache key
                            micro_batch_size=cfg.get("sft_micro_batch"))
        model.save_pretrained(folder)
        history.to_csv(folder / "sft_history.csv", index=False)
        return model, history

    (model, history), folder, _ = cached(name, spec, build, lambda folder: (load_trained(folder, tokenizer, device),
                                                                          None))
    return model.eval(), folder, history


@torch.no_grad()
def precompute_ref_logps(ref_model, tokenizer, chosen, rejected, batch_size: int = 64,
                         average: bool = False, progress: bool = False,
                         precision=None, chunk_size: int | None = DEFAULT_CHUNK_SIZE
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference log-probs of every chosen and rejected sequence, computed once.

    The reference is frozen, so its log-probs never change: computing them up front
    means the reference need not sit in memory during training, and each step runs
    one forward pass fewer. ``chosen``/``rejected`` are the encoded lists from
    :func:`dpo_lab.collate.encode_pairs`. ``precision`` as the training loops (``None``:
    decided from the model's device); the log-probs themselves are float32.
    """
    device = next(ref_model.parameters()).device
    precision = resolve_precision(precision, device)
    was_training = ref_model.training
    ref_model.eval()
    out_c, out_r = [], []
    for start in progress_bar(range(0, len(chosen), batch_size), "reference log-probs", enabled=progress):
        batch = _to(collate_pairs(chosen[start:start + batch_size], rejected[start:start + batch_size],
                                  tokenizer.pad_token_id), device)
        with precision.autocast():
            logps = sequence_logprobs(ref_model, **batch, average=average, chunk_size=chunk_size).float().cpu()
        half = logps.shape[0] // 2
        out_c.append(logps[:half])
        out_r.append(logps[half:])
    ref_model.train(was_training)
    return torch.cat(out_c), torch.cat(out_r)


def dpo_batch_loss(policy, batch: dict, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, *,
                   beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
                   nll_alpha: float = 0.0, simpo_gamma: float = 0.5,
                   chunk_size: int | None = DEFAULT_CHUNK_SIZE) -> tuple[torch.Tensor, dict]:
    """The DPO loss of one collated pair batch (chosen rows first), and its metrics.

    One forward pass scores chosen and rejected together. ``loss_type="ipo"`` uses
    length-averaged log-probs (as TRL does); the reference log-probs given must then
    be averaged too. ``nll_alpha > 0`` adds alpha times the per-token NLL of the chosen
    completion (DPO+NLL).

    The reference-free losses of :mod:`dpo_lab.losses` are dispatched here too, on
    length-averaged log-probs (the reference log-probs are then unused):
    ``loss_type="simpo"`` (``beta`` and ``simpo_gamma``) and ``loss_type="orpo"``
    (``beta`` is ORPO's lambda).

    ``chunk_size`` is that of :func:`dpo_lab.logprobs.sequence_logprobs` (``None``: the plain
    full-logits path, kept as the reference and for the benchmark).
    """
    if loss_type not in LOSS_TYPES + REFERENCE_FREE_LOSSES:
        raise ValueError(f"loss_type={loss_type!r} is not one of {LOSS_TYPES + REFERENCE_FREE_LOSSES}")
    average = loss_type in AVERAGED_LOSSES
    if loss_type in REFERENCE_FREE_LOSSES and label_smoothing:
        raise ValueError(f"label_smoothing is not defined for loss_type={loss_type!r}")
    logps = sequence_logprobs(policy, **batch, average=average, chunk_size=chunk_size)
    half = logps.shape[0] // 2
    chosen, rejected = logps[:half], logps[half:]
    if loss_type == "simpo":
        losses, r_chosen, r_rejected = simpo_loss(chosen, rejected, beta=beta, gamma=simpo_gamma)
    elif loss_type == "orpo":
        losses, r_chosen, r_rejected = orpo_loss(chosen, rejected, lam=beta)
    else:
        losses, r_chosen, r_rejected = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=beta,
                                                loss_type=loss_type, label_smoothing=label_smoothing)
    loss = losses.mean()
    if nll_alpha:
        lengths = batch["completion_mask"][:half].sum(-1)
        chosen_sum = chosen * lengths if average else chosen
        loss = loss + nll_alpha * nll_loss(chosen_sum, lengths).mean()
    names = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
             "logps/chosen", "logps/rejected"]
    values = torch.stack([loss.detach(), r_chosen.mean(), r_rejected.mean(), (r_chosen - r_rejected).mean(),
                          (r_chosen > r_rejected).float().mean(), chosen.detach().mean(), rejected.detach().mean()])
    # one transfer to Python for all metrics: on a GPU each .item() would wait for the device
    metrics = dict(zip(names, values.float().tolist()))
    return loss, metrics


def train_dpo(policy, ref_model, tokenizer, pairs: list[dict], *, beta: float = 0.1,
              loss_type: str = "sigmoid", label_smoothing: float = 0.0, nll_alpha: float = 0.0,
              simpo_gamma: float = 0.5,
              epochs: float = 1.0, batch_size: int = 16, lr: float = 1e-4, weight_decay: float = 0.0,
              max_prompt_length=None, max_length=None, grad_clip: float = 1.0, seed: int = 0,
              ref_logps: tuple[torch.Tensor, torch.Tensor] | None = None, callback=None,
              callback_every: int | None = None, progress: bool = True, desc: str = "DPO", precision=None,
              chunk_size: int | None = DEFAULT_CHUNK_SIZE, micro_batch_size: int | None = None) -> pd.DataFrame:
    """Train ``policy`` with a preference loss on ``pairs`` against a frozen reference.

    The reference enters only through its log-probs. They are precomputed once (from
    ``ref_model``, or passed in as ``ref_logps``, e.g. from a cache shared by a beta
    sweep), so ``ref_model`` may be ``None`` when ``ref_logps`` is given.

    ``callback(step, policy)`` runs every ``callback_every`` steps and after the last step
    (for evaluating the policy along training); a dict it returns is merged into that step's
    metrics row (see the module docstring).

    ``loss_type`` is one of :data:`dpo_lab.losses.LOSS_TYPES` or a reference-free loss,
    ``"simpo"`` or ``"orpo"`` (see :func:`dpo_batch_loss`); those need neither a
    reference model nor ``ref_logps``.

    ``precision``: see the module docstring (``None``: decided from the policy's device);
    reference log-probs computed here use the same precision. ``chunk_size``: of
    :func:`dpo_lab.logprobs.sequence_logprobs` (``None``: the plain full-logits path).
    ``micro_batch_size``: pairs a forward/backward pass (gradient accumulation, see
    :func:`micro_batches`); ``None``: the whole batch at once.
    """
    check_micro_batch_size(micro_batch_size)
    if not pairs:
        raise ValueError("nothing to train on: the preference pairs are empty (0 items)")
    device = next(policy.parameters()).device
    precision = resolve_precision(precision, device)
    scaler = precision.grad_scaler()
    chosen, rejected, _ = encode_pairs(tokenizer, pairs, max_prompt_length, max_length)
    average = loss_type in AVERAGED_LOSSES
    if ref_logps is None and ref_model is None and loss_type in REFERENCE_FREE_LOSSES:
        ref_logps = (torch.zeros(len(pairs)), torch.zeros(len(pairs)))  # never read by these losses
    if ref_logps is None:
        if ref_model is None:
            raise ValueError("train_dpo needs ref_model or precomputed ref_logps")
        ref_logps = precompute_ref_logps(ref_model, tokenizer, chosen, rejected, average=average,
                                         precision=precision.name, chunk_size=chunk_size)
    ref_chosen, ref_rejected = ref_logps
    if len(ref_chosen) != len(pairs):
        raise ValueError(f"ref_logps has {len(ref_chosen)} rows but there are {len(pairs)} pairs")

    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=weight_decay)
    policy.train()
    rows = []
    batches = list(shuffled_batches(len(pairs), batch_size, epochs, seed, what="preference pairs"))
    for step, idx in enumerate(progress_bar(batches, desc, enabled=progress), start=1):
        optimizer.zero_grad(set_to_none=True)
        loss = metrics = None
        for micro, share in micro_batches(idx, micro_batch_size):
            batch = _to(collate_pairs([chosen[i] for i in micro], [rejected[i] for i in micro],
                                      tokenizer.pad_token_id), device)
            with precision.autocast():
                micro_loss, micro_metrics = dpo_batch_loss(
                    policy, batch, ref_chosen[micro].to(device), ref_rejected[micro].to(device), beta=beta,
                    loss_type=loss_type, label_smoothing=label_smoothing, nll_alpha=nll_alpha,
                    simpo_gamma=simpo_gamma, chunk_size=chunk_size)
            # the loss and the metrics are means over the micro-batch's pairs: times its share, its terms
            scaled_backward(share * micro_loss, scaler)
            loss = accumulate(loss, share * micro_loss.detach())
            metrics = accumulate(metrics, {name: share * value for name, value in micro_metrics.items()})
        check_finite(loss, step, desc)
        grad_norm = clip_and_step(optimizer, policy.parameters(), grad_clip, scaler)
        row = {"step": step, **metrics, "grad_norm": grad_norm.item()}
        row.update(run_callback(callback, callback_every, step, len(batches), policy))
        rows.append(row)
    policy.eval()
    return pd.DataFrame(rows)
