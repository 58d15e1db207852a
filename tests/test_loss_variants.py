"""The reference-free loss variants (SimPO, ORPO) against values computed by hand with math, not torch,
and their dispatch through dpo_batch_loss / train_dpo."""

import copy
import math

import pytest
import torch

from dpo_lab.collate import collate_pairs, encode_pairs
from dpo_lab.data import SAMPLE_PATH, load_jsonl
from dpo_lab.logprobs import sequence_logprobs
from dpo_lab.losses import dpo_loss, log_odds, orpo_loss, simpo_loss
from dpo_lab.models import tiny_gpt2
from dpo_lab.train import dpo_batch_loss, train_dpo

# one pair: the policy's per-token mean log-probs of chosen and rejected
AVG_W, AVG_L = -0.5, -1.0


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def softplus(z):
    """-log sigma(-z) = log(1 + e^z)."""
    return math.log1p(math.exp(z))


# --- SimPO -------------------------------------------------------------------------

def test_simpo_value_by_hand():
    # beta=2, gamma=0.5: logits = 2 * (-0.5 - -1.0) - 0.5 = 0.5; loss = log(1 + e^-0.5)
    losses, rc, rr = simpo_loss(t(AVG_W), t(AVG_L), beta=2.0, gamma=0.5)
    assert losses.item() == pytest.approx(0.47407698418010663, rel=1e-12)
    assert losses.item() == pytest.approx(softplus(-0.5), rel=1e-12)
    assert rc.item() == pytest.approx(2.0 * AVG_W) and rr.item() == pytest.approx(2.0 * AVG_L)


@pytest.mark.parametrize("beta,gamma", [(1.0, 0.0), (2.5, 1.25), (10.0, 3.0)])
def test_simpo_formula(beta, gamma):
    expected = softplus(-(beta * (AVG_W - AVG_L) - gamma))
    assert simpo_loss(t(AVG_W), t(AVG_L), beta=beta, gamma=gamma)[0].item() == pytest.approx(expected, rel=1e-12)


def test_simpo_margin_raises_the_loss():
    # a larger target margin gamma means the same pair satisfies it less well
    low = simpo_loss(t(AVG_W), t(AVG_L), beta=2.0, gamma=0.0)[0].item()
    high = simpo_loss(t(AVG_W), t(AVG_L), beta=2.0, gamma=1.0)[0].item()
    assert high > low
    assert low == pytest.approx(softplus(-1.0))  # log(1 + e^-1) = 0.31326...
    assert low == pytest.approx(0.31326168751822286, rel=1e-12)


def test_simpo_is_dpo_with_no_reference_and_no_margin():
    # with gamma=0, SimPO is the DPO sigmoid loss on averaged log-probs with a reference of 0
    zero = t(0.0)
    dpo, _, _ = dpo_loss(t(AVG_W), t(AVG_L), zero, zero, beta=2.0)
    assert simpo_loss(t(AVG_W), t(AVG_L), beta=2.0, gamma=0.0)[0].item() == pytest.approx(dpo.item(), rel=1e-12)


def test_simpo_ignores_length_when_averaged():
    # two completions with the same per-token log-prob have zero reward difference, however long
    short_sum, long_sum = -5.0, -50.0  # 5 tokens and 50 tokens at -1 nat per token
    losses, rc, rr = simpo_loss(t(short_sum / 5), t(long_sum / 50), beta=2.0, gamma=0.0)
    assert rc.item() == rr.item()
    assert losses.item() == pytest.approx(math.log(2))


def test_simpo_gradient_by_hand():
    # d/d avg_w of -log sigma(z), z = beta*(avg_w - avg_l) - gamma, is -beta * sigma(-z)
    beta, gamma = 2.0, 0.5
    w = t(AVG_W).requires_grad_(True)
    simpo_loss(w, t(AVG_L), beta=beta, gamma=gamma)[0].sum().backward()
    z = beta * (AVG_W - AVG_L) - gamma
    assert w.grad.item() == pytest.approx(-beta / (1 + math.exp(z)), rel=1e-12)


def test_simpo_bad_arguments():
    with pytest.raises(ValueError, match="beta"):
        simpo_loss(t(AVG_W), t(AVG_L), beta=0.0)
    with pytest.raises(ValueError, match="gamma"):
        simpo_loss(t(AVG_W), t(AVG_L), beta=1.0, gamma=-0.1)


# --- ORPO --------------------------------------------------------------------------

def test_log_odds_by_hand():
    # p = e^-0.5 = 0.60653...; odds = p / (1 - p); log odds = 0.43275...
    p = math.exp(-0.5)
    assert log_odds(t(-0.5)).item() == pytest.approx(math.log(p / (1 - p)), rel=1e-12)
    assert log_odds(t(-0.5)).item() == pytest.approx(0.43275212956718856, rel=1e-12)
    # p = 1/2 has odds 1, log odds 0
    assert log_odds(t(math.log(0.5))).item() == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="below 0"):
        log_odds(t(0.0))


def test_orpo_value_by_hand():
    lam = 0.1
    pw, pl = math.exp(AVG_W), math.exp(AVG_L)
    ratio = math.log(pw / (1 - pw)) - math.log(pl / (1 - pl))  # log odds ratio = 0.97408...
    expected = -AVG_W + lam * softplus(-ratio)  # NLL of chosen + lam * (-log sigma(ratio))
    losses, rc, rr = orpo_loss(t(AVG_W), t(AVG_L), lam=lam)
    assert ratio == pytest.approx(0.9740769841801067, rel=1e-12)
    assert losses.item() == pytest.approx(expected, rel=1e-12)
    assert losses.item() == pytest.approx(0.5 + 0.1 * 0.32029978523753655, rel=1e-12)
    assert rc.item() == pytest.approx(lam * AVG_W) and rr.item() == pytest.approx(lam * AVG_L)


def test_orpo_equal_completions_cost_nll_plus_lam_log2():
    # same likelihood: odds ratio 1, the preference term is -log sigma(0) = log 2
    losses, _, _ = orpo_loss(t(-0.7), t(-0.7), lam=0.25)
    assert losses.item() == pytest.approx(0.7 + 0.25 * math.log(2), rel=1e-12)


def test_orpo_gradient_by_hand():
    # d/d avg_l of lam * softplus(-(lo(w) - lo(l))) = lam * sigma(-ratio) * d lo(l)/d avg_l,
    # with d lo/d a = 1 + e^a / (1 - e^a) = 1 / (1 - p)
    lam = 0.5
    lose = t(AVG_L).requires_grad_(True)
    orpo_loss(t(AVG_W), lose, lam=lam)[0].sum().backward()
    pw, pl = math.exp(AVG_W), math.exp(AVG_L)
    ratio = math.log(pw / (1 - pw)) - math.log(pl / (1 - pl))
    expected = lam / (1 + math.exp(ratio)) / (1 - pl)
    assert lose.grad.item() == pytest.approx(expected, rel=1e-12)


def test_orpo_bad_lambda():
    with pytest.raises(ValueError, match="lam"):
        orpo_loss(t(AVG_W), t(AVG_L), lam=0.0)


def test_variant_rewards_are_detached():
    w = t(AVG_W).requires_grad_(True)
    for fn in (lambda: simpo_loss(w, t(AVG_L)), lambda: orpo_loss(w, t(AVG_L))):
        _, rc, rr = fn()
        assert not rc.requires_grad and not rr.requires_grad


# --- dispatch through the training code --------------------------------------------

PAIRS = load_jsonl(SAMPLE_PATH)[:16]


@pytest.fixture()
def batch_and_model(tokenizer):
    chosen, rejected, _ = encode_pairs(tokenizer, PAIRS[:4])
    batch = collate_pairs(chosen, rejected, tokenizer.pad_token_id)
    model = tiny_gpt2(tokenizer, seed=0, n_layer=1, n_embd=32, n_head=2).eval()
    return batch, model


@pytest.mark.parametrize("loss_type", ["simpo", "orpo"])
def test_batch_loss_dispatches_on_averaged_logps(batch_and_model, loss_type):
    batch, model = batch_and_model
    with torch.no_grad():
        avg = sequence_logprobs(model, **batch, average=True)
        win, lose = avg[:4], avg[4:]
        expected = (simpo_loss(win, lose, beta=2.0, gamma=0.7)[0] if loss_type == "simpo"
                    else orpo_loss(win, lose, lam=2.0)[0])
        # the reference log-probs are not read: garbage in them changes nothing
        junk = torch.full((4,), 123.0)
        loss, metrics = dpo_batch_loss(model, batch, junk, junk, beta=2.0, loss_type=loss_type, simpo_gamma=0.7)
    assert loss.item() == pytest.approx(expected.mean().item(), rel=1e-6)
    assert metrics["logps/chosen"] == pytest.approx(win.mean().item(), rel=1e-6)


def test_batch_loss_rejects_unknown_or_mismatched_options(batch_and_model):
    batch, model = batch_and_model
    zeros = torch.zeros(4)
    with pytest.raises(ValueError, match="not one of"):
        dpo_batch_loss(model, batch, zeros, zeros, beta=0.1, loss_type="kto")
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_batch_loss(model, batch, zeros, zeros, beta=0.1, loss_type="simpo", label_smoothing=0.1)


@pytest.mark.parametrize("loss_type,beta", [("simpo", 2.0), ("orpo", 0.5)])
def test_train_dpo_reference_free_needs_no_reference(tokenizer, loss_type, beta):
    torch.manual_seed(0)
    policy = tiny_gpt2(tokenizer, seed=1, n_layer=1, n_embd=32, n_head=2)
    start = copy.deepcopy(policy)
    metrics = train_dpo(policy, None, tokenizer, PAIRS, beta=beta, loss_type=loss_type, lr=3e-3, batch_size=8,
                        epochs=3, seed=3, progress=False)
    assert len(metrics) == 6
    assert metrics.loss.iloc[-1] < metrics.loss.iloc[0]
    assert metrics["rewards/margins"].iloc[-1] > metrics["rewards/margins"].iloc[0]
    assert any((a != b).any() for a, b in zip(policy.parameters(), start.parameters()))
