"""Every loss type against values computed by hand with math, not torch."""

import math

import pytest
import torch

from dpo_lab.losses import dpo_loss, nll_loss

# one pair: policy/ref log-probs of chosen and rejected
PC, PR, RC, RR = -10.0, -14.0, -11.0, -12.0
H_W, H_L = PC - RC, PR - RR  # +1, -2
DELTA = H_W - H_L  # 3


def logsig(z):
    return -math.log1p(math.exp(-z))


def run(beta, loss_type, eps=0.0):
    t = lambda v: torch.tensor([v], dtype=torch.float64)
    losses, rc, rr = dpo_loss(t(PC), t(PR), t(RC), t(RR), beta=beta, loss_type=loss_type, label_smoothing=eps)
    return losses.item(), rc.item(), rr.item()


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_sigmoid_and_rewards(beta):
    loss, rc, rr = run(beta, "sigmoid")
    assert loss == pytest.approx(-logsig(beta * DELTA), rel=1e-12)
    assert rc == pytest.approx(beta * H_W)
    assert rr == pytest.approx(beta * H_L)


def test_sigmoid_value_by_hand():
    # beta=0.5, Delta=3: -log sigma(1.5) = log(1 + e^-1.5) = 0.2014132779827524
    assert run(0.5, "sigmoid")[0] == pytest.approx(0.2014132779827524, rel=1e-12)


def test_conservative_dpo():
    beta, eps = 0.5, 0.2
    expected = -(1 - eps) * logsig(beta * DELTA) - eps * logsig(-beta * DELTA)
    assert run(beta, "sigmoid", eps)[0] == pytest.approx(expected, rel=1e-12)


def test_robust():
    beta, eps = 0.5, 0.2
    expected = (-(1 - eps) * logsig(beta * DELTA) + eps * logsig(-beta * DELTA)) / (1 - 2 * eps)
    assert run(beta, "robust", eps)[0] == pytest.approx(expected, rel=1e-12)
    # with no noise it is plain DPO
    assert run(beta, "robust", 0.0)[0] == pytest.approx(run(beta, "sigmoid", 0.0)[0])


def test_hinge():
    assert run(0.1, "hinge")[0] == pytest.approx(1 - 0.3)  # relu(1 - 0.1*3)
    assert run(0.5, "hinge")[0] == 0.0  # margin 1.5 > 1


def test_ipo():
    assert run(0.1, "ipo")[0] == pytest.approx((3 - 5.0) ** 2)
    assert run(0.5, "ipo")[0] == pytest.approx((3 - 1.0) ** 2)


def test_rewards_are_detached():
    pc = torch.tensor([PC], requires_grad=True)
    _, rc, _ = dpo_loss(pc, torch.tensor([PR]), torch.tensor([RC]), torch.tensor([RR]))
    assert not rc.requires_grad


def test_sigmoid_gradient_matches_closed_form():
    """d loss / d (h_w, h_l) = beta * sigma(-beta*Delta) * (-1, +1)."""
    beta = 0.7
    h = torch.tensor([[0.3, -0.4], [1.2, 2.0], [-0.5, 0.1]], dtype=torch.float64, requires_grad=True)
    zeros = torch.zeros(3, dtype=torch.float64)
    losses, _, _ = dpo_loss(h[:, 0], h[:, 1], zeros, zeros, beta=beta)
    losses.sum().backward()
    delta = (h[:, 0] - h[:, 1]).detach()
    weight = beta * torch.sigmoid(-beta * delta)
    assert torch.allclose(h.grad[:, 0], -weight)
    assert torch.allclose(h.grad[:, 1], weight)


def test_nll_loss():
    out = nll_loss(torch.tensor([-6.0, -3.0]), torch.tensor([3, 2]))
    assert torch.allclose(out, torch.tensor([2.0, 1.5]))


@pytest.mark.parametrize("kwargs, message", [
    ({"loss_type": "kto"}, "loss_type"),
    ({"beta": 0.0}, "beta"),
    ({"label_smoothing": 0.5}, "label_smoothing"),
])
def test_bad_arguments(kwargs, message):
    z = torch.zeros(1)
    with pytest.raises(ValueError, match=message):
        dpo_loss(z, z, z, z, **kwargs)
