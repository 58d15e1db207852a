"""The precision decision, and the bf16/fp16 (loss-scaled) paths of the loops, run on a CPU."""

import copy

import pytest
import torch

from dpo_lab.collate import collate_pairs, encode_pairs
from dpo_lab.data import SAMPLE_PATH, load_jsonl
from dpo_lab.models import tiny_gpt2
from dpo_lab.precision import Precision, backward_and_step, choose_precision, resolve_precision
from dpo_lab.train import dpo_batch_loss, precompute_ref_logps, train_dpo, train_sft

PAIRS = load_jsonl(SAMPLE_PATH)[:16]


def test_the_decision():
    assert choose_precision("cpu") == "fp32"
    assert choose_precision("mps") == "fp32"
    assert choose_precision("cuda", capability=(7, 5)) == "fp16"  # a T4: bf16 only emulated
    assert choose_precision("cuda", capability=(7, 0)) == "fp16"  # a V100
    assert choose_precision("cuda", capability=(8, 0)) == "bf16"  # an A100
    assert choose_precision("cuda", capability=(9, 0)) == "bf16"  # an H100/H200
    assert resolve_precision(None, "cpu") == Precision("fp32", "cpu")
    assert resolve_precision("fp16", "cpu").loss_scaling and not resolve_precision("bf16", "cpu").loss_scaling
    with pytest.raises(ValueError, match="precision must be one of"):
        Precision("int8")


def test_autocast_runs_matmuls_in_low_precision():
    a = torch.randn(4, 4)
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        with Precision(name, "cpu").autocast():
            assert (a @ a).dtype == dtype


def test_loss_scaling_scales_then_unscales_and_skips_overflow():
    """fp16's GradScaler on a CPU: backward sees loss * scale, the step sees the true gradient; an inf
    gradient skips the step and halves the scale."""
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler = Precision("fp16", "cpu").grad_scaler()
    assert scaler.is_enabled() and scaler.get_scale() == 2.0**16
    seen = []
    w.register_hook(lambda g: seen.append(g.clone()))
    norm = backward_and_step((w**2).sum(), opt, [w], grad_clip=100.0, scaler=scaler)
    assert seen[0].tolist() == [2.0 * 2**16, 4.0 * 2**16]  # the scaled gradient in backward
    assert norm.item() == pytest.approx(20**0.5)  # clipping sees the unscaled one
    assert w.tolist() == pytest.approx([1.0 - 0.2, 2.0 - 0.4])
    backward_and_step(w.sum() * float("inf"), opt, [w], grad_clip=1.0, scaler=scaler)
    assert w.tolist() == pytest.approx([0.8, 1.6]) and scaler.get_scale() == 2.0**15  # skipped, scale halved
    assert not Precision("bf16", "cpu").grad_scaler().is_enabled()


@pytest.fixture()
def models(tokenizer):
    ref = tiny_gpt2(tokenizer, seed=0, n_layer=1, n_embd=32, n_head=2)
    policy = copy.deepcopy(ref)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    return policy, ref


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_low_precision_dpo_loss_is_close_to_fp32(tokenizer, models, name):
    policy, ref = models
    chosen, rejected, _ = encode_pairs(tokenizer, PAIRS, verbose=False)
    batch = collate_pairs(chosen, rejected, tokenizer.pad_token_id)
    ref_c, ref_r = precompute_ref_logps(ref, tokenizer, chosen, rejected)
    with torch.no_grad():
        exact, m_exact = dpo_batch_loss(policy, batch, ref_c, ref_r, beta=0.5)
        with Precision(name, "cpu").autocast():
            low, m_low = dpo_batch_loss(policy, batch, ref_c, ref_r, beta=0.5)
    assert low.dtype == torch.float32  # log-probs and loss stay float32
    assert abs(exact.item() - 0.6931) > 0.01  # not the trivial value
    assert low.item() == pytest.approx(exact.item(), abs=0.02)
    # summed log-probs of ~20 tokens: bf16's 8-bit mantissa in the body moves them by well under 1%
    assert m_low["logps/chosen"] == pytest.approx(m_exact["logps/chosen"], rel=0.01)


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_loops_train_in_low_precision(tokenizer, models, name):
    """SFT and DPO run end to end under autocast (fp16 through the gradient scaler) and their loss
    curves stay close to fp32's."""
    policy, ref = models
    prompts, completions = [p["prompt"] for p in PAIRS], [p["chosen"] for p in PAIRS]
    curves = {}
    for precision in ("fp32", name):
        model = copy.deepcopy(ref)
        sft = train_sft(model, tokenizer, prompts, completions, epochs=2, batch_size=8, lr=3e-3, progress=False,
                        precision=precision)
        dpo = train_dpo(copy.deepcopy(policy), ref, tokenizer, PAIRS, beta=0.5, lr=3e-3, batch_size=8, epochs=2,
                        progress=False, precision=precision)
        curves[precision] = (sft.loss.to_numpy(), dpo.loss.to_numpy())
        assert all(p.dtype == torch.float32 for p in model.parameters())  # float32 master weights
    for exact, low in zip(curves["fp32"], curves[name]):
        assert low == pytest.approx(exact, abs=0.05)
    assert curves[name][0][-1] < curves[name][0][0] - 0.5  # and it learns


def test_reward_model_and_rloo_take_the_precision(tokenizer, models):
    import numpy as np

    from dpo_lab.reward_model import reward_model_from_lm, train_reward_model
    from dpo_lab.rloo import train_rloo

    policy, ref = models
    runs = {precision: train_reward_model(reward_model_from_lm(ref, seed=0), tokenizer, PAIRS, epochs=4,
                                          batch_size=8, lr=1e-3, progress=False, precision=precision)
            for precision in ("fp32", "bf16", "fp16")}
    assert runs["bf16"].loss.to_numpy() == pytest.approx(runs["fp32"].loss.to_numpy(), abs=0.02)
    # fp16: the scaler's first scale (2**16) overflows, that step is skipped (its norm is not finite) and the
    # scale halved (it may happen again while the scale settles); the other steps train
    fp16 = runs["fp16"]
    assert fp16.loss.iloc[0] == pytest.approx(runs["fp32"].loss.iloc[0], abs=0.01)
    assert np.isfinite(fp16.loss).all() and not np.isfinite(fp16.grad_norm.iloc[0])
    assert np.isfinite(fp16.grad_norm).sum() >= 2
    assert fp16.margin.iloc[-4:].mean() > fp16.margin.iloc[0] + 1.0  # it learns the preferences
    rows = {}
    for precision in ("fp32", "bf16"):
        rows[precision] = train_rloo(copy.deepcopy(policy), ref, tokenizer, ["The film"] * 2,
                                     lambda t: np.zeros(len(t)), k=2, steps=1, prompts_per_step=2, lr=0.0,
                                     max_new_tokens=4, seed=0, progress=False, precision=precision)
    # same samples (sampling is outside autocast); the KL of the bf16 forward is close to fp32's
    assert rows["bf16"].kl.iloc[0] == pytest.approx(rows["fp32"].kl.iloc[0], abs=0.1)
    assert rows["bf16"].length.iloc[0] == rows["fp32"].length.iloc[0]
