"""One precision decision for every training loop, and the two tools that carry it out.

The rule (made once, from the device the model sits on):

* ``"bf16"`` where bfloat16 is *native*: CUDA GPUs of compute capability 8.0 or more
  (A100, L4, H100...). bf16 has float32's exponent range, so no loss scaling is needed.
* ``"fp16"`` with loss scaling on older CUDA GPUs (compute capability below 8.0, e.g.
  Colab's T4 at 7.5). ``torch.cuda.is_bf16_supported()`` answers True on a T4 because
  bf16 is *emulated* there (slowly), so it is not asked. fp16's small range makes small
  gradients underflow to zero, hence the loss is multiplied by a large factor before
  ``backward`` and the gradients divided by it before the step (``GradScaler``), which
  also skips a step whose gradients overflowed and lowers the factor (the first step or
  two of a run are usually skipped this way while it finds its scale: their logged
  ``grad_norm`` is inf or nan).
* ``"fp32"`` on a CPU or Apple's MPS (the tiny profile): full precision.

Mixed precision keeps the weights and the optimiser in float32; only the forward pass
runs its matrix products in the low precision, under ``torch.autocast``. The log-probs
DPO compares are computed in float32 whatever the precision
(:class:`dpo_lab.logprobs.ChunkedTokenLogprobs`).

A loop uses it as::

    precision = resolve_precision(precision, device)   # None: the rule above
    scaler = precision.grad_scaler()
    optimizer.zero_grad(set_to_none=True)
    for micro in micro_batches:                          # gradient accumulation (one piece by default)
        with precision.autocast():
            loss = ...                                   # this micro-batch's term of the batch's loss
        scaled_backward(loss, scaler)                    # adds into .grad
    grad_norm = clip_and_step(optimizer, params, grad_clip, scaler)   # once a batch

(:func:`dpo_lab.train.micro_batches` says why the accumulated gradient is the whole batch's.)
:func:`backward_and_step` is the same for a batch in one piece.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def choose_precision(device=None, capability: tuple[int, int] | None = None) -> str:
    """``"bf16"``, ``"fp16"`` or ``"fp32"`` for ``device`` (default: CUDA when present, else CPU).

    ``capability`` is the CUDA compute capability ``(major, minor)``; it is read from the
    device when not given (pass it to see the decision for another GPU, e.g. ``(7, 5)``
    for a T4).
    """
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda":
        return "fp32"
    if capability is None:
        capability = torch.cuda.get_device_capability(device)
    return "bf16" if tuple(capability) >= (8, 0) else "fp16"


@dataclass(frozen=True)
class Precision:
    """A precision (``name``) on a device type: its autocast context and its gradient scaler."""

    name: str
    device_type: str = "cpu"

    def __post_init__(self):
        if self.name not in DTYPES:
            raise ValueError(f"precision must be one of {tuple(DTYPES)}, got {self.name!r}")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the autocast region (float32 for ``"fp32"``)."""
        return DTYPES[self.name] or torch.float32

    @property
    def loss_scaling(self) -> bool:
        """fp16 needs loss scaling; bf16 and fp32 do not."""
        return self.name == "fp16"

    def autocast(self):
        """``torch.autocast`` in the low precision, or nothing for fp32."""
        if self.name == "fp32":
            return nullcontext()
        return torch.autocast(self.device_type, dtype=DTYPES[self.name])

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A ``GradScaler`` that scales the loss for fp16 and is a pass-through otherwise."""
        return torch.amp.GradScaler(self.device_type, enabled=self.loss_scaling)


def resolve_precision(precision, device) -> Precision:
    """``precision`` as a :class:`Precision` on ``device``'s type: ``None`` applies the rule of
    :func:`choose_precision`; a name (``"bf16"``, ``"fp16"``, ``"fp32"``) is taken as given."""
    device = torch.device(device)
    if isinstance(precision, Precision):
        return precision
    if precision is None:
        precision = choose_precision(device)
    return Precision(str(precision), device.type)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def scaled_backward(loss: torch.Tensor, scaler: torch.amp.GradScaler) -> None:
    """Backward of ``loss`` times the scaler's factor (fp16; a pass-through otherwise).

    The gradients *add* into ``.grad``, so calling it on each micro-batch's term of a batch's loss
    accumulates the batch's gradient (still scaled, by one factor: the scale only changes in
    :func:`clip_and_step`).
    """
    scaler.scale(loss).backward()


def clip_and_step(optimizer, parameters, grad_clip: float | None, scaler: torch.amp.GradScaler) -> torch.Tensor:
    """Unscale the accumulated gradients, clip their norm, step, update the scale: once a batch.

    Returns the gradient norm before clipping (of the *unscaled* gradients). With fp16 a
    step whose gradients overflowed is skipped by the scaler (the norm is then inf or nan).
    Unscaling must happen once, after the last micro-batch's backward: ``GradScaler`` allows
    one ``unscale_`` an optimiser step.
    """
    parameters = [p for p in parameters if p.requires_grad]
    scaler.unscale_(optimizer)
    if grad_clip:
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
    scaler.step(optimizer)
    scaler.update()
    return grad_norm


def backward_and_step(loss: torch.Tensor, optimizer, parameters, grad_clip: float | None,
                      scaler: torch.amp.GradScaler) -> torch.Tensor:
    """One optimiser step on one loss: zero_grad, :func:`scaled_backward`, :func:`clip_and_step`.

    Returns the gradient norm before clipping (of the *unscaled* gradients), as :func:`clip_and_step`.
    """
    optimizer.zero_grad(set_to_none=True)
    scaled_backward(loss, scaler)
    return clip_and_step(optimizer, parameters, grad_clip, scaler)
