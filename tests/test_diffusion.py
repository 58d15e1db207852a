"""Tests of dpo_lab.diffusion (the tiny DDPM, Diffusion-DPO) and dpo_lab.tasks.digits,
against values worked out by hand in the comments."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dpo_lab import denoisers
from dpo_lab import diffusion as D
from dpo_lab.tasks import digits as G


class ConstantEps(nn.Module):
    """A stand-in denoiser that predicts the same noise value everywhere."""

    def __init__(self, value: float = 0.0, image_shape=(1, 2, 2)):
        super().__init__()
        self.value = value
        self.image_shape = image_shape
        self.dummy = nn.Parameter(torch.zeros(()))  # so the sampler can find a device

    def forward(self, x, t, c):
        return torch.full_like(x, self.value) + 0 * self.dummy


# ----------------------------------------------------------------------------
# Noise schedule and forward process
# ----------------------------------------------------------------------------


def test_alpha_bars_by_hand():
    s = D.NoiseSchedule(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    # alphas 0.9, 0.8, 0.7, 0.6; running products 0.9, 0.72, 0.504, 0.3024
    assert torch.allclose(s.alphas, torch.tensor([0.9, 0.8, 0.7, 0.6]))
    assert torch.allclose(s.alpha_bars, torch.tensor([0.9, 0.72, 0.504, 0.3024]))
    assert s.T == 4


def test_linear_schedule_scales_ho_end_points():
    s = D.linear_schedule(100)
    # Ho's 1e-4..0.02 over 1000 steps, scaled by 1000/100: 1e-3..0.2 in steps of 0.199/99
    assert s.betas[0].item() == pytest.approx(1e-3)
    assert s.betas[-1].item() == pytest.approx(0.2)
    # alpha_bar_2 = (1 - 0.001) * (1 - (0.001 + 0.199/99)) = 0.999 * 0.996989899 = 0.995992909
    assert s.alpha_bars[1].item() == pytest.approx(0.995992909, abs=1e-6)
    assert s.alpha_bars[-1].item() < 1e-3  # almost pure noise at t = T
    ho = D.linear_schedule(1000)
    assert ho.betas[0].item() == pytest.approx(1e-4) and ho.betas[-1].item() == pytest.approx(0.02)


def test_cosine_schedule_by_hand():
    s = D.cosine_schedule(2)
    # f(t) = cos^2((t/2 + 0.008)/1.008 * pi/2): f(0) = 0.99984459, f(1) = 0.49376684, f(2) ~ 0
    # alpha_bar_1 = f(1)/f(0) = 0.49384359; beta_2 = 1 - f(2)/f(1) ~ 1 is clipped to 0.999,
    # so alpha_bar_2 = 0.49384359 * 0.001
    assert s.alpha_bars[0].item() == pytest.approx(0.49384359, abs=1e-6)
    assert s.betas[1].item() == pytest.approx(0.999)
    assert s.alpha_bars[1].item() == pytest.approx(0.49384359e-3, rel=1e-4)


def test_schedule_rejects_bad_betas():
    with pytest.raises(ValueError):
        D.NoiseSchedule(torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError):
        D.NoiseSchedule(torch.tensor([]))


def test_q_sample_by_hand():
    s = D.NoiseSchedule(torch.tensor([0.36]))  # alpha_bar = 0.64: sqrt 0.8, sqrt(1 - 0.64) = 0.6
    x0 = torch.tensor([1.0, -1.0, 0.5, 0.0]).view(1, 1, 2, 2)
    eps = torch.tensor([0.5, 0.5, -1.0, 2.0]).view(1, 1, 2, 2)
    # 0.8 * x0 + 0.6 * eps = [0.8 + 0.3, -0.8 + 0.3, 0.4 - 0.6, 0 + 1.2]
    expected = torch.tensor([1.1, -0.5, -0.2, 1.2]).view(1, 1, 2, 2)
    assert torch.allclose(D.q_sample(x0, torch.tensor([0]), eps, s), expected)


# ----------------------------------------------------------------------------
# Denoisers and the training step
# ----------------------------------------------------------------------------


def test_denoising_errors_by_hand():
    s = D.NoiseSchedule(torch.tensor([0.36]))
    x0 = torch.zeros(1, 1, 2, 2)
    eps = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    t = torch.tensor([0])
    c = torch.tensor([0])
    # predicting 0: mean of eps^2 = (1 + 4 + 9 + 16) / 4 = 7.5
    assert D.denoising_errors(ConstantEps(0.0), x0, c, t, eps, s).item() == pytest.approx(7.5)
    # predicting 1: mean of (eps - 1)^2 = (0 + 1 + 4 + 9) / 4 = 3.5
    assert D.denoising_errors(ConstantEps(1.0), x0, c, t, eps, s).item() == pytest.approx(3.5)


@pytest.mark.parametrize("kind,shape", [("mlp", (1, 8, 8)), ("unet", (1, 28, 28))])
def test_denoisers_start_at_zero_and_keep_shape(kind, shape):
    torch.manual_seed(0)
    model = denoisers.build_denoiser(kind, shape, num_classes=10)
    x = torch.randn(3, *shape)
    out = model(x, torch.tensor([0, 5, 9]), torch.tensor([1, 2, 3]))
    assert out.shape == x.shape
    # the output layer is zero-initialised: the untrained model predicts eps = 0
    assert torch.equal(out, torch.zeros_like(out))


def test_unet_rejects_sizes_not_divisible_by_4():
    with pytest.raises(ValueError):
        denoisers.TinyUNet((1, 30, 30))
    with pytest.raises(ValueError):
        denoisers.build_denoiser("transformer", (1, 8, 8))


def test_timestep_embedding_by_hand():
    emb = denoisers.timestep_embedding(torch.tensor([0, 1]), 4)
    # frequencies exp(-ln(10000) * [0, 1] / 2) = [1, 0.01]; [cos(t f), sin(t f)]
    expected = torch.tensor([[1.0, 1.0, 0.0, 0.0], [math.cos(1), math.cos(0.01), math.sin(1), math.sin(0.01)]])
    assert torch.allclose(emb, expected, atol=1e-6)


def _tiny_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g)


def test_train_ddpm_repeats_exactly_and_learns():
    images, labels = _tiny_data()
    s = D.linear_schedule(20)
    torch.manual_seed(0)
    m1 = denoisers.DenoiserMLP((1, 8, 8), hidden=32, depth=1, emb_dim=16)
    m2 = copy.deepcopy(m1)
    logs1 = D.train_ddpm(m1, images, labels, s, steps=60, batch_size=32, lr=3e-3, seed=1, progress=False)
    logs2 = D.train_ddpm(m2, images, labels, s, steps=60, batch_size=32, lr=3e-3, seed=1, progress=False)
    assert logs1["loss"].tolist() == logs2["loss"].tolist()
    assert logs1["step"].tolist() == list(range(1, 61))  # steps count from 1, as in every loop of the course
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True))
    first = logs1["loss"].head(10).mean()
    last = logs1["loss"].tail(10).mean()
    assert first > 0.9 and last < first  # eps = 0 at the start gives L_simple ~ E[eps^2] = 1


# ----------------------------------------------------------------------------
# Ancestral sampler
# ----------------------------------------------------------------------------


def test_sampler_by_hand_two_steps():
    # betas 0.1, 0.2: alpha 0.9, 0.8; alpha_bar 0.9, 0.72. With eps_theta = 0 and no clipping:
    # step t=2: mean = x / sqrt(0.8) = 1.118034 x (Ho eq. 11),
    #           variance beta_tilde = (1 - 0.9) / (1 - 0.72) * 0.2 = 0.0714286
    # step t=1: mean = x0_hat = x / sqrt(0.9), no noise.
    s = D.NoiseSchedule(torch.tensor([0.1, 0.2]))
    labels = torch.zeros(3, dtype=torch.long)
    out = D.sample(ConstantEps(0.0), s, labels, seed=5, clip_x0=False)
    g = torch.Generator().manual_seed(5)
    x_T = torch.randn(3, 1, 2, 2, generator=g)
    z = torch.randn(3, 1, 2, 2, generator=g)
    expected = ((1.118034 * x_T + math.sqrt(0.0714286) * z) / math.sqrt(0.9)).clamp(-1, 1)
    assert torch.allclose(out, expected, atol=1e-5)


def test_sampler_posterior_mean_equals_ho_eq_11():
    # Without clipping, the posterior-mean step equals 1/sqrt(alpha_t) (x_t - beta_t/sqrt(1-alpha_bar_t) eps).
    s = D.NoiseSchedule(torch.tensor([0.05, 0.1, 0.2]))
    torch.manual_seed(0)
    model = denoisers.DenoiserMLP((1, 2, 2), hidden=16, depth=1, emb_dim=8)
    nn.init.normal_(model.out.weight, std=0.5)  # a non-trivial eps_theta
    labels = torch.tensor([0, 3])
    out = D.sample(model, s, labels, seed=3, clip_x0=False)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, 2, 2, generator=g)
    with torch.no_grad():
        for i in reversed(range(3)):
            eps = model(x, torch.full((2,), i), labels)
            x = (x - s.betas[i] / (1 - s.alpha_bars[i]).sqrt() * eps) / s.alphas[i].sqrt()
            if i > 0:
                var = (1 - s.alpha_bars[i - 1]) / (1 - s.alpha_bars[i]) * s.betas[i]
                x = x + var.sqrt() * torch.randn(2, 1, 2, 2, generator=g)
    assert torch.allclose(out, x.clamp(-1, 1), atol=1e-5)


def test_sampler_is_deterministic_from_a_seed():
    s = D.linear_schedule(10)
    torch.manual_seed(0)
    model = denoisers.DenoiserMLP((1, 8, 8), hidden=16, depth=1, emb_dim=8)
    nn.init.normal_(model.out.weight, std=0.1)
    labels = torch.arange(4)
    a = D.sample(model, s, labels, seed=11)
    torch.randn(100)  # the global RNG does not matter
    b = D.sample(model, s, labels, seed=11)
    c = D.sample(model, s, labels, seed=12)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1


def test_sampler_clips_x0_hat():
    # One step, alpha_bar = 0.81: x0_hat = x_T / 0.9, clipped to [-1, 1] before it is returned.
    s = D.NoiseSchedule(torch.tensor([0.19]))
    labels = torch.zeros(4, dtype=torch.long)
    out = D.sample(ConstantEps(0.0), s, labels, seed=0, clip_x0=True)
    x_T = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, (x_T / 0.9).clamp(-1, 1), atol=1e-6)


# ----------------------------------------------------------------------------
# Diffusion-DPO
# ----------------------------------------------------------------------------

MODEL_W = torch.tensor([0.30, 0.50, 0.20])
MODEL_L = torch.tensor([0.40, 0.45, 0.25])
REF_W = torch.tensor([0.32, 0.50, 0.20])
REF_L = torch.tensor([0.40, 0.50, 0.20])


def test_diffusion_dpo_loss_by_hand():
    losses, inside, acc = D.diffusion_dpo_loss(MODEL_W, MODEL_L, REF_W, REF_L, beta=100.0)
    # inside = -0.5 * 100 * ((m_w - r_w) - (m_l - r_l)):
    #   pair 1: -50 * (-0.02 - 0)    =  1.0 -> loss log(1 + e^-1)   = 0.3132617
    #   pair 2: -50 * (0 - (-0.05))  = -2.5 -> loss log(1 + e^2.5)  = 2.5788897
    #   pair 3: -50 * (0 - 0.05)     =  2.5 -> loss log(1 + e^-2.5) = 0.0788897
    assert torch.allclose(inside, torch.tensor([1.0, -2.5, 2.5]), atol=1e-5)
    assert torch.allclose(losses, torch.tensor([0.3132617, 2.5788897, 0.0788897]), atol=1e-5)
    assert acc.item() == pytest.approx(2 / 3)


def test_diffusion_dpo_loss_gradient_by_hand():
    m_w = MODEL_W.clone().requires_grad_(True)
    losses, _, _ = D.diffusion_dpo_loss(m_w, MODEL_L, REF_W, REF_L, beta=100.0)
    losses[0].backward()
    # d/d m_w of -log sigma(-50 (m_w - ...)) = 50 * sigma(-inside) = 50 / (1 + e) = 13.447071
    assert m_w.grad[0].item() == pytest.approx(13.447071, abs=1e-4)
    assert m_w.grad[1].item() == 0.0


def test_diffusion_dpo_loss_at_the_reference_is_log_2_and_ties_count_half():
    losses, inside, acc = D.diffusion_dpo_loss(REF_W, REF_L, REF_W, REF_L, beta=5000.0)
    assert torch.allclose(losses, torch.full((3,), math.log(2)))
    assert torch.equal(inside, torch.zeros(3))
    assert acc.item() == 0.5


def test_diffusers_beta_is_half_of_ours():
    beta = 100.0
    ours, _, _ = D.diffusion_dpo_loss(MODEL_W, MODEL_L, REF_W, REF_L, beta=beta)
    model_diff, ref_diff = MODEL_W - MODEL_L, REF_W - REF_L
    diffusers = -F.logsigmoid((beta / 2) * (ref_diff - model_diff))
    assert torch.allclose(ours, diffusers, atol=1e-6)


def test_diffusion_dpo_loss_rejects_non_positive_beta():
    with pytest.raises(ValueError):
        D.diffusion_dpo_loss(MODEL_W, MODEL_L, REF_W, REF_L, beta=0.0)


def test_diffusion_dpo_step_starts_at_log_2_and_shares_t_and_noise():
    images, labels = _tiny_data(16)
    s = D.linear_schedule(20)
    torch.manual_seed(0)
    ref = denoisers.DenoiserMLP((1, 8, 8), hidden=32, depth=1, emb_dim=16)
    nn.init.normal_(ref.out.weight, std=0.1)
    model = copy.deepcopy(ref)
    loss, metrics = D.diffusion_dpo_step(model, ref, images[:8], images[8:], labels[:8], s, beta=1000.0,
                                         generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["rewards/accuracies"] == 0.5 and metrics["rewards/margins"] == 0.0
    # With x_w == x_l, a shared (t, eps) gives identical errors, whatever the model: margin exactly 0.
    model2 = denoisers.DenoiserMLP((1, 8, 8), hidden=32, depth=1, emb_dim=16)
    nn.init.normal_(model2.out.weight, std=0.1)
    loss2, m2 = D.diffusion_dpo_step(model2, ref, images[:8], images[:8], labels[:8], s, beta=1000.0,
                                     generator=torch.Generator().manual_seed(0))
    assert m2["rewards/margins"] == 0.0 and loss2.item() == pytest.approx(math.log(2), abs=1e-6)


def test_train_diffusion_dpo_learns_the_pairs_and_repeats():
    images, labels = _tiny_data(64)
    s = D.linear_schedule(20)
    torch.manual_seed(0)
    ref = denoisers.DenoiserMLP((1, 8, 8), hidden=32, depth=1, emb_dim=16)
    D.train_ddpm(ref, images, labels, s, steps=30, batch_size=32, lr=3e-3, seed=0, progress=False)
    x_w, x_l, c = images[:32], images[32:], labels[:32]
    seen = []
    runs = []
    for _ in range(2):
        model = copy.deepcopy(ref)
        logs = D.train_diffusion_dpo(model, ref, x_w, x_l, c, s, beta=1000.0, steps=40, batch_size=16, lr=3e-4,
                                     seed=0, progress=False, callback=lambda step, m: seen.append(step),
                                     callback_every=15)
        runs.append(logs)
    assert runs[0]["loss"].tolist() == runs[1]["loss"].tolist()
    assert seen == [15, 30, 40, 15, 30, 40]  # every 15 steps and after the last, the rule of every loop
    assert runs[0]["callback_seconds"].notna().sum() == 3
    assert runs[0]["loss"].iloc[0] == pytest.approx(math.log(2), abs=1e-6)
    assert runs[0]["rewards/accuracies"].tail(10).mean() > 0.5
    assert runs[0]["loss"].tail(10).mean() < math.log(2)


# ----------------------------------------------------------------------------
# The digits task
# ----------------------------------------------------------------------------


def test_sklearn_digits_range_and_shape():
    images, labels = G.load_sklearn_digits()
    assert images.shape == (1797, 1, 8, 8) and labels.shape == (1797,)
    assert images.min().item() == -1.0 and images.max().item() == 1.0
    assert sorted(labels.unique().tolist()) == list(range(10))


def test_ink_and_gold_reward_by_hand():
    x = torch.stack([torch.full((1, 2, 2), -1.0), torch.full((1, 2, 2), 1.0),
                     torch.tensor([-1.0, -1.0, 1.0, 1.0]).view(1, 2, 2)])
    assert torch.allclose(G.ink(x), torch.tensor([0.0, 1.0, 0.5]))

    class Uniform(nn.Module):  # logits 0 everywhere: p = 1/10 for every class
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return torch.zeros(x.shape[0], 10) + 0 * self.p

    # crisp = 1 for all three (every pixel is paper or ink). Stray: paper 0; full ink: every pixel has
    # 3 inked neighbours -> 0; the two-pixel bar: each inked pixel has 1 inked neighbour -> 0.
    # Too bold past ink_max = 0.6 with width 0.2: only the full image, ((1 - 0.6) / 0.2)^2 = 4.
    r = G.gold_reward(x, torch.tensor([0, 1, 2]), Uniform(), ink_max=0.6, width=0.2)
    assert torch.allclose(r, torch.tensor([0.1, 0.1 - 4.0, 0.1]), atol=1e-6)


def test_make_pairs_and_win_rate_by_hand():
    a = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1)
    b = torch.tensor([10.0, 20.0, 30.0]).view(3, 1, 1, 1)
    x_w, x_l, a_won = G.make_pairs(a, b, torch.tensor([0.5, 0.1, 0.2]), torch.tensor([0.4, 0.3, 0.2]))
    assert x_w.flatten().tolist() == [1.0, 20.0, 3.0]  # tie -> a
    assert x_l.flatten().tolist() == [10.0, 2.0, 30.0]
    assert a_won.tolist() == [True, False, True]
    # wins, loss, tie, win -> (1 + 0 + 0.5 + 1) / 4
    assert G.win_rate(torch.tensor([2.0, 0.0, 1.0, 3.0]), torch.tensor([1.0, 1.0, 1.0, 0.0])) == 0.625


def test_diversity_by_hand():
    x = torch.stack([torch.full((1, 2, 2), -1.0), torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 0.0)])
    # class 0: all-paper vs all-ink, RMS distance 1 in [0, 1] units; class 1 has one image and is skipped
    assert G.diversity(x, torch.tensor([0, 0, 1])) == pytest.approx(1.0)
    # three images at 0, 0.5, 1 ink: distances 0.5, 1, 0.5 -> mean 2/3
    assert G.diversity(x, torch.tensor([0, 0, 0])) == pytest.approx(2 / 3)


def test_image_grid_by_hand():
    grid = G.image_grid(torch.tensor([-1.0, 1.0, 0.0]).view(3, 1, 1, 1), ncols=2)
    # 2 rows x 2 cols of 1x1 images with 1-pixel padding: 5 x 5
    assert grid.shape == (5, 5)
    assert grid[1, 1] == 0.0 and grid[1, 3] == 1.0 and grid[3, 1] == 0.5 and grid[3, 3] == 0.0


def test_classifier_learns_digits():
    images, labels = G.load_sklearn_digits()
    train, test = G.split_indices(len(images), 0.2, seed=0)
    assert len(set(train.tolist()) & set(test.tolist())) == 0 and len(train) + len(test) == 1797
    state = torch.random.get_rng_state()
    clf = G.train_classifier(images[train], labels[train], steps=300, seed=0)
    assert torch.equal(state, torch.random.get_rng_state())  # leaves the global RNG alone
    assert G.classifier_accuracy(clf, images[test], labels[test]) > 0.9
    lp = G.class_logprob(clf, images[test[:5]], labels[test[:5]])
    assert lp.shape == (5,) and (lp <= 0).all()


def _mnist_like_dataset():
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    pixels = [torch.zeros(28, 28, dtype=torch.uint8), torch.full((28, 28), 255, dtype=torch.uint8)]
    pixels[0][0, 0] = 255
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=[str(i) for i in range(10)])})
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(p.numpy()) for p in pixels], "label": [7, 3]}, features=features)


def _check_mnist(images, labels):
    assert images.shape == (2, 1, 28, 28) and labels.tolist() == [7, 3]
    assert images[0, 0, 0, 0].item() == 1.0 and images[0, 0, 1, 1].item() == -1.0
    assert (images[1] == 1.0).all()


def test_load_mnist_from_a_local_directory_in_hub_layout(tmp_path):
    ds = _mnist_like_dataset()
    (tmp_path / "mnist").mkdir()
    ds.to_parquet(str(tmp_path / "mnist" / "train-00000-of-00001.parquet"))
    _check_mnist(*G.load_mnist(str(tmp_path), split="train"))
    ds.save_to_disk(str(tmp_path / "saved"))
    _check_mnist(*G.load_mnist(str(tmp_path / "saved"), split="train"))
    images, labels = G.load_mnist(str(tmp_path), split="train", limit=1)
    assert images.shape == (1, 1, 28, 28) and labels.tolist() == [7]


def test_mnist_schema_errors_name_the_problem():
    with pytest.raises(ValueError, match="row 0 has no field 'label'"):
        G.mnist_to_tensors([{"image": torch.zeros(28, 28).numpy()}], source="x.parquet")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_the_diffusion_loops_run_in_mixed_precision(precision):
    """The GPU path of the diffusion loops (dpo_lab.precision's autocast, and loss scaling for fp16), run on a CPU."""
    images, labels = _tiny_data(32)
    s = D.linear_schedule(20)
    torch.manual_seed(0)
    ref = denoisers.DenoiserMLP((1, 8, 8), hidden=32, depth=1, emb_dim=16)
    logs = D.train_ddpm(ref, images, labels, s, steps=4, batch_size=16, lr=1e-3, seed=0, progress=False,
                        precision=precision)
    assert logs["step"].tolist() == [1, 2, 3, 4] and logs["loss"].map(math.isfinite).all()
    assert logs["grad_norm"].notna().all()  # fp16's first steps may be skipped (an inf norm), but it is logged
    model = copy.deepcopy(ref)
    logs = D.train_diffusion_dpo(model, ref, images[:16], images[16:], labels[:16], s, beta=100.0, steps=3,
                                 batch_size=8, lr=1e-4, seed=0, progress=False, precision=precision)
    assert logs["loss"].map(math.isfinite).all() and {"rewards/accuracies", "grad_norm"} <= set(logs.columns)
    with pytest.raises(ValueError, match="precision must be one of"):
        D.train_ddpm(ref, images, labels, s, steps=1, progress=False, precision="fp8")
