"""Gradient accumulation (``micro_batch_size``): the same steps, the same numbers, less memory.

Every loop is run three times from the same start and seed: the batch in one piece, in micro-batches
that do not divide it (6 = 4 + 2) and in ones that do (6 = 2 + 2 + 2). In exact arithmetic the
accumulated gradient *is* the whole batch's, so the parameters after the steps and every logged
metric must agree up to float rounding. The models run in float64 so that this rounding is small;
the log-probs stay float32 by design (:mod:`dpo_lab.logprobs`), which is what the tolerance is
sized for (see ``RTOL``).
"""

import copy

import numpy as np
import pytest
import torch

from dpo_lab.data import SAMPLE_PATH, load_jsonl
from dpo_lab.models import tiny_gpt2
from dpo_lab.precision import Precision, backward_and_step, clip_and_step, scaled_backward
from dpo_lab.reward_model import reward_model_from_lm, train_reward_model
from dpo_lab.rloo import train_rloo
from dpo_lab.train import micro_batches, train_dpo, train_sft

PAIRS = load_jsonl(SAMPLE_PATH)[:18]  # 3 steps of 6 pairs an epoch
BATCH = 6
MICRO_SIZES = [4, 2]  # 4 does not divide the batch of 6 (a micro-batch of 4, then one of 2); 2 does

# Tolerances. The bodies run in float64, but the log-probs are float32 by design (and the reward
# model's head), so a micro-batch, padded to its own length and summed in another order, moves a
# log-prob by about one float32 ulp (~6e-8 relative). Measured, the logged metrics then differ by
# <= 3e-7 relative, the gradients by <= ~1e-7 of their largest element. (With the log-probs patched
# to float64, a diagnostic not kept, every loop agrees to 1e-10: the accumulation itself is exact.)
RTOL = 1e-6
# RLOO's loss and KL are small differences of float32 log-probs of tens of nats (~2e-6 ulp each)
RLOO_ATOL = 1e-5
# Parameters after Adam steps: Adam divides by the gradient's running RMS, so an element whose
# gradient nearly cancels (or changes sign between steps) turns that rounding into a larger relative
# change of its update; measured <= 1.3e-5 of the update's norm. A wrong scaling of a micro-batch
# changes the update by O(1) of its norm.
UPDATE_RTOL = 1e-4


def small_model(tokenizer, seed=1):
    return tiny_gpt2(tokenizer, seed=seed, n_layer=1, n_embd=32, n_head=2).double()


def flat(tensors):
    return torch.cat([t.detach().flatten().double() for t in tensors])


def check_loop(run, micro, atol=1e-9):
    """``run(micro_batch_size, **overrides)`` trains a fresh copy and returns ``(history, model, start)``,
    ``start`` the flat parameters before training. Checks the micro-batched run against the whole batch's."""
    (frame_w, model_w, start), (frame_m, model_m, _) = run(None), run(micro)
    assert list(frame_m.columns) == list(frame_w.columns) and len(frame_m) == len(frame_w) > 1
    numeric = frame_w.select_dtypes("number").columns  # every logged metric, grad_norm included
    np.testing.assert_allclose(frame_m[numeric].to_numpy(float), frame_w[numeric].to_numpy(float),
                               rtol=RTOL, atol=atol)
    after_w, after_m = flat(model_w.parameters()), flat(model_m.parameters())
    update = (after_w - start).norm()
    assert update > 0 and (after_m - after_w).norm() <= UPDATE_RTOL * update
    # the accumulated gradient itself, element by element: with lr 0 and no clipping, the
    # parameters never move and the last step's gradient stays in .grad
    (frame_w, model_w, _), (frame_m, model_m, _) = run(None, lr=0.0, grad_clip=0.0), run(micro, lr=0.0, grad_clip=0.0)
    grad_w, grad_m = flat(p.grad for p in model_w.parameters()), flat(p.grad for p in model_m.parameters())
    torch.testing.assert_close(grad_m, grad_w, rtol=RTOL, atol=RTOL * grad_w.abs().max().item())
    np.testing.assert_allclose(frame_m.grad_norm, frame_w.grad_norm, rtol=RTOL)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
@pytest.mark.parametrize("micro", MICRO_SIZES)
def test_dpo_micro_batches_match_the_whole_batch(tokenizer, micro, loss_type):
    """DPO, and IPO with the NLL term (a mean over pairs too), on float64 models."""
    ref = small_model(tokenizer)
    policy = copy.deepcopy(ref)
    with torch.no_grad():  # start away from the reference, so the rewards and margins are not all 0
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype))

    def run(micro_batch_size, lr=3e-3, grad_clip=1.0):
        model = copy.deepcopy(policy)
        history = train_dpo(model, ref, tokenizer, PAIRS, beta=0.5, loss_type=loss_type, nll_alpha=0.5, lr=lr,
                            grad_clip=grad_clip, batch_size=BATCH, epochs=1, seed=3, progress=False,
                            micro_batch_size=micro_batch_size)
        return history, model, flat(policy.parameters())

    assert run(None)[0]["rewards/margins"].abs().min() > 1e-4
    check_loop(run, micro)


@pytest.mark.parametrize("micro", MICRO_SIZES)
def test_sft_micro_batches_match_the_whole_batch(tokenizer, micro):
    """SFT divides by the whole batch's completion tokens: micro-batches of unequal token counts
    still give the whole batch's gradient (a per-micro-batch mean would not)."""
    def run(micro_batch_size, lr=3e-3, grad_clip=1.0):
        model = small_model(tokenizer)
        start = flat(model.parameters())
        history = train_sft(model, tokenizer, [p["prompt"] for p in PAIRS], [p["chosen"] for p in PAIRS], lr=lr,
                            grad_clip=grad_clip, batch_size=BATCH, epochs=1, seed=2, progress=False,
                            micro_batch_size=micro_batch_size)
        return history, model, start

    check_loop(run, micro)


@pytest.mark.parametrize("micro", MICRO_SIZES)
def test_reward_model_micro_batches_match_the_whole_batch(tokenizer, micro):
    """Bradley-Terry with the centring term. The backbone runs in float64; the head reads a float32
    state by design, so it stays float32."""
    def run(micro_batch_size, lr=3e-3, grad_clip=1.0):
        rm = reward_model_from_lm(small_model(tokenizer), seed=0)
        rm.backbone.double()
        start = flat(rm.parameters())
        history = train_reward_model(rm, tokenizer, PAIRS, center_coef=0.01, lr=lr, grad_clip=grad_clip,
                                     batch_size=BATCH, epochs=1, seed=4, progress=False,
                                     micro_batch_size=micro_batch_size)
        return history, rm, start

    assert 0 < run(None)[0].accuracy.iloc[-1] < 1  # not a trivial batch
    check_loop(run, micro)


@pytest.mark.parametrize("micro", MICRO_SIZES)
def test_rloo_micro_batches_match_the_whole_batch(tokenizer, micro):
    """2 prompts x k=3 samples = 6 completions a step; the advantages are of the whole step."""
    def chars(texts):
        return np.array([len(t) for t in texts]) / 10.0

    ref = small_model(tokenizer, seed=0).eval()

    def run(micro_batch_size, lr=1e-2, grad_clip=1.0):
        policy = copy.deepcopy(ref)
        history = train_rloo(policy, ref, tokenizer, ["The film", "A movie", "The plot"], chars, kl_coef=0.1, k=3,
                             steps=3, prompts_per_step=2, lr=lr, grad_clip=grad_clip, max_new_tokens=6, seed=0,
                             progress=False, micro_batch_size=micro_batch_size)
        return history, policy, flat(ref.parameters())

    assert run(None)[0].kl.iloc[1:].abs().min() > 1e-4  # the KL penalty is in play after the first step
    check_loop(run, micro, atol=RLOO_ATOL)


def test_micro_batches_split_and_share():
    assert list(micro_batches([5, 3, 1, 0, 2, 4], 4)) == [([5, 3, 1, 0], 4 / 6), ([2, 4], 2 / 6)]
    assert list(micro_batches([5, 3, 1], None)) == [([5, 3, 1], 1.0)]
    assert list(micro_batches([5, 3, 1], 3)) == list(micro_batches([5, 3, 1], 10)) == [([5, 3, 1], 1.0)]
    assert list(micro_batches([5, 3, 1], np.int64(2))) == [([5, 3], 2 / 3), ([1], 1 / 3)]


@pytest.mark.parametrize("bad", [0, -1, 2.5, "4", True])
def test_bad_micro_batch_size_is_a_clear_error(tokenizer, bad):
    model = small_model(tokenizer)
    message = f"micro_batch_size must be a positive int or None, got {bad!r}"
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        list(micro_batches([0, 1], bad))
    with pytest.raises(ValueError, match="micro_batch_size"):
        train_sft(model, tokenizer, ["a"], [" b"], progress=False, micro_batch_size=bad)
    with pytest.raises(ValueError, match="micro_batch_size"):
        train_dpo(model, model, tokenizer, PAIRS, progress=False, micro_batch_size=bad)
    with pytest.raises(ValueError, match="micro_batch_size"):
        train_reward_model(reward_model_from_lm(model), tokenizer, PAIRS, progress=False, micro_batch_size=bad)
    with pytest.raises(ValueError, match="micro_batch_size"):
        train_rloo(model, model, tokenizer, ["a"], lambda t: np.zeros(len(t)), progress=False,
                   micro_batch_size=bad)


def test_nan_in_one_micro_batch_stops_before_the_step(tokenizer):
    """The NaN check is on the whole batch's loss, after the micro-batches and before the optimiser step."""
    policy = small_model(tokenizer)
    before = copy.deepcopy(policy.state_dict())
    ref_chosen = torch.zeros(len(PAIRS))
    ref_chosen[5] = float("nan")  # one pair in one of the step's five micro-batches: the batch's loss is NaN
    with pytest.raises(FloatingPointError, match="step 1"):  # steps count from 1
        train_dpo(policy, None, tokenizer, PAIRS, ref_logps=(ref_chosen, torch.zeros(len(PAIRS))),
                  batch_size=len(PAIRS), micro_batch_size=4, progress=False)
    for name, value in policy.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_accumulated_fp16_scaled_backward_is_one_step_on_the_sum():
    """With fp16's GradScaler each micro-batch's term is scaled in backward, and one unscale + clip + step
    follows the last: the same update as one backward of the whole loss."""
    def step(terms):
        w = torch.nn.Parameter(torch.tensor([1.0, 2.0, -3.0]))
        opt = torch.optim.SGD([w], lr=0.1)
        scaler = Precision("fp16", "cpu").grad_scaler()
        seen = []
        w.register_hook(lambda g: seen.append(g.clone()))
        if len(terms) == 1:
            norm = backward_and_step(terms[0](w), opt, [w], grad_clip=1.0, scaler=scaler)
        else:
            opt.zero_grad(set_to_none=True)
            for term in terms:
                scaled_backward(term(w), scaler)
            norm = clip_and_step(opt, [w], grad_clip=1.0, scaler=scaler)
        return w.detach(), norm, seen, scaler.get_scale()

    whole = step([lambda w: (w ** 2).sum() / 3])
    parts = step([lambda w: (w[:2] ** 2).sum() / 3, lambda w: (w[2:] ** 2).sum() / 3])
    assert parts[2][0].tolist() == pytest.approx([2 / 3 * 2**16, 4 / 3 * 2**16, 0.0])  # scaled in backward
    assert parts[1].item() == pytest.approx(whole[1].item()) == pytest.approx((4 + 16 + 36) ** 0.5 / 3)
    torch.testing.assert_close(parts[0], whole[0])  # clipped to norm 1, one SGD step
    assert parts[3] == whole[3] == 2.0**16


def test_fp16_loss_scaling_with_micro_batches(tokenizer):
    """The reward model in fp16 through the GradScaler: micro-batches skip the same overflowing steps
    (one scale update a step, not one a micro-batch) and log the same losses, up to fp16's rounding."""
    def run(micro_batch_size):
        rm = reward_model_from_lm(tiny_gpt2(tokenizer, seed=1, n_layer=1, n_embd=32, n_head=2), seed=0)
        return train_reward_model(rm, tokenizer, PAIRS, batch_size=BATCH, epochs=2, lr=1e-3, seed=4, progress=False,
                                  precision="fp16", micro_batch_size=micro_batch_size)

    whole, micro = run(None), run(4)
    assert not np.isfinite(whole.grad_norm.iloc[0])  # the first scale (2**16) overflows: a skipped step
    np.testing.assert_array_equal(np.isfinite(micro.grad_norm), np.isfinite(whole.grad_norm))
    np.testing.assert_allclose(micro.loss, whole.loss, atol=5e-3)
    finite = np.isfinite(whole.grad_norm)
    np.testing.assert_allclose(micro.grad_norm[finite], whole.grad_norm[finite], rtol=2e-2)


class SavedActivations:
    """Peak bytes of the tensors autograd holds for backward (activations, and the weights it saves),
    counted with saved-tensor hooks: a CPU stand-in for ``torch.cuda.max_memory_allocated``."""

    def __init__(self):
        self.live = self.peak = 0

    def __enter__(self):
        meter = self

        class Held:
            def __init__(self, tensor):
                self.tensor, self.nbytes = tensor, tensor.numel() * tensor.element_size()
                meter.live += self.nbytes
                meter.peak = max(meter.peak, meter.live)

            def __del__(self):
                meter.live -= self.nbytes

        self._hooks = torch.autograd.graph.saved_tensors_hooks(Held, lambda held: held.tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


def test_micro_batches_hold_fewer_activations(tokenizer):
    peaks = {}
    for micro_batch_size in (None, 2):
        with SavedActivations() as meter:
            train_dpo(small_model(tokenizer), None, tokenizer, PAIRS, ref_logps=(torch.zeros(18), torch.zeros(18)),
                      batch_size=BATCH, epochs=1, progress=False, micro_batch_size=micro_batch_size)
        peaks[micro_batch_size] = meter.peak
    assert meter.live == 0  # every saved tensor was released after its backward
    assert peaks[2] < 0.6 * peaks[None]  # measured 0.50: a third of the activations, plus the saved weights
