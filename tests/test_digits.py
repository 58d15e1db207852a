"""Tests of the gold and proxy rewards of dpo_lab.tasks.digits (notebook 06), by hand and on real
digits: the gold reward's features trade off, so neither darkening a digit nor adding specks of
ink raises it, while the proxy reward pays for both."""

from __future__ import annotations

import pytest
import torch

from dpo_lab import denoisers
from dpo_lab import diffusion as D
from dpo_lab.tasks import digits as G


def _image(rows):
    """A (1, 1, H, W) image in [-1, 1] from rows of [0, 1] intensities."""
    return G.to_model_range(torch.tensor(rows, dtype=torch.float32))[None, None]


def test_crispness_by_hand():
    x = torch.cat([_image([[0.0, 1.0]]), _image([[0.5, 0.5]]), _image([[0.0, 0.75]])])
    # |2u - 1|: (1 + 1) / 2 = 1; (0 + 0) / 2 = 0; (1 + 0.5) / 2 = 0.75
    assert torch.allclose(G.crispness(x), torch.tensor([1.0, 0.0, 0.75]))


def test_stray_ink_by_hand():
    speck = _image([[0, 0, 0], [0, 1, 0], [0, 0, 0]])  # one full pixel, no ink around: 1
    faint = _image([[0, 0, 0], [0, 0.5, 0], [0, 0, 0]])  # a faint speck counts its ink: 0.5
    bar = _image([[0, 0, 0], [1, 1, 0], [0, 0, 0]])  # each pixel has one full neighbour: 0
    # a grey pixel of 0.4 beside a full one: the grey has 1 of ink around -> 0; the full one has 0.4
    # around -> 1 * (1 - 0.4) = 0.6
    pair = _image([[0, 0, 0], [0.4, 1, 0], [0, 0, 0]])
    assert torch.allclose(G.stray_ink(torch.cat([speck, faint, bar, pair])), torch.tensor([1.0, 0.5, 0.0, 0.6]))


def test_ink_limit_and_bad_input():
    x = torch.cat([_image([[v, v]]) for v in (0.1, 0.2, 0.3, 0.4, 0.5)])
    assert G.ink_limit(x, 0.5) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="quantile"):
        G.ink_limit(x, 1.5)
    with pytest.raises(ValueError, match="width"):
        G.gold_reward(x, torch.zeros(5, dtype=torch.long), torch.nn.Identity(), ink_max=0.3, width=0)


@pytest.fixture(scope="module")
def real():
    """Held-out real digits, a classifier trained on the rest, and the gold reward's ink limit."""
    images, labels = G.load_sklearn_digits()
    train, test = G.split_indices(len(images), 0.2, seed=0)
    clf = G.train_classifier(images[train], labels[train], steps=300, seed=0)
    return images[test], labels[test], clf, G.ink_limit(images[train])


def test_darkening_everything_lowers_the_gold_reward_but_raises_the_proxy(real):
    x, c, clf, ink_max = real
    darker = G.to_model_range((G.to_unit_range(x) + 0.3).clamp(max=1))  # every pixel 0.3 darker
    assert (G.ink(darker) > G.ink(x)).all()
    gold, gold_dark = G.gold_reward(x, c, clf, ink_max), G.gold_reward(darker, c, clf, ink_max)
    assert (gold_dark < gold).float().mean() > 0.95  # grey paper and too much ink
    assert gold_dark.mean() < gold.mean() - 0.5
    proxy, proxy_dark = G.proxy_reward(x, c, clf), G.proxy_reward(darker, c, clf)
    assert (proxy_dark > proxy).float().mean() > 0.95  # the proxy pays for the ink


def test_more_ink_as_stray_specks_lowers_the_gold_reward(real):
    x, c, clf, ink_max = real
    u = G.to_unit_range(x).clone()
    # full-ink specks in the four corners, where real digits leave paper (the corners are paper here)
    assert (u[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]] < 0.2).float().mean() > 0.9
    u[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]] = 1.0
    specked = G.to_model_range(u)
    assert (G.ink(specked) > G.ink(x)).all() and ((G.stray_ink(specked) > G.stray_ink(x) + 2).float().mean() > 0.9)
    gold, gold_specked = G.gold_reward(x, c, clf, ink_max), G.gold_reward(specked, c, clf, ink_max)
    assert (gold_specked < gold).float().mean() > 0.95
    assert (G.proxy_reward(specked, c, clf) > G.proxy_reward(x, c, clf)).float().mean() > 0.95


def test_real_digits_score_well_on_every_feature(real):
    x, c, clf, ink_max = real
    f = G.gold_features(x, c, clf)
    assert f["p_class"].mean() > 0.9 and f["stray"].median() == 0 and f["crisp"].mean() > 0.7
    assert (f["ink"] <= ink_max).float().mean() > 0.95


def test_implicit_reward_matches_the_loss_and_is_zero_at_the_reference():
    torch.manual_seed(0)
    model = denoisers.build_denoiser("mlp", (1, 2, 2), hidden=16, depth=1)
    ref = denoisers.build_denoiser("mlp", (1, 2, 2), hidden=16, depth=1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    s = D.linear_schedule(10)
    x_w, x_l = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2)
    c = torch.arange(6) % 3
    # at the reference every implicit reward is 0
    assert torch.equal(D.implicit_reward(ref, ref, x_w, c, s, 100.0, n_draws=3), torch.zeros(6))
    # one draw: r(x_w) - r(x_l) is the loss's `inside` at the same t and noise
    r_w = D.implicit_reward(model, ref, x_w, c, s, 100.0, n_draws=1, seed=3)
    r_l = D.implicit_reward(model, ref, x_l, c, s, 100.0, n_draws=1, seed=3)
    t, noise = D.draw_t_and_noise(x_w, s, torch.Generator().manual_seed(3))
    with torch.no_grad():
        errs = [D.denoising_errors(m, x, c, t, noise, s) for m, x in
                ((model, x_w), (model, x_l), (ref, x_w), (ref, x_l))]
    _, inside, _ = D.diffusion_dpo_loss(*errs, beta=100.0)
    assert torch.allclose(r_w - r_l, inside, atol=1e-5)
    # the same seed gives the same draws: identical images get identical rewards, in any batch size
    assert torch.allclose(D.implicit_reward(model, ref, x_w, c, s, 100.0, n_draws=4, seed=1, batch_size=4),
                          D.implicit_reward(model, ref, x_w, c, s, 100.0, n_draws=4, seed=1), atol=1e-5)
    with pytest.raises(ValueError, match="n_draws"):
        D.implicit_reward(model, ref, x_w, c, s, 100.0, n_draws=0)
