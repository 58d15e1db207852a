"""The denoisers eps_theta(x_t, t, c) of the course's tiny DDPMs: the architectures, apart from the method.

Two networks predict the noise in x_t given the step t and a class label c (the method that trains
and aligns them, a noise schedule, DDPM training, the sampler and Diffusion-DPO, is in
:mod:`dpo_lab.diffusion`):

* :class:`DenoiserMLP`: a residual MLP over the flattened image, for 8x8 digits (the tiny profile);
* :class:`TinyUNet`: a two-level UNet, for 28x28 MNIST (the full profile).

Both are conditioned the same way: a sinusoidal embedding of t (Vaswani et al., 2017; Ho et al.,
2020, appendix B) plus a learned embedding of c, added inside every block.
:func:`build_denoiser` picks one by name.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al., 2017), shape ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class _Conditioning(nn.Module):
    """Timestep and class label -> one embedding vector a sample."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.dim = dim
        self.time_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.class_emb = nn.Embedding(num_classes, dim)

    def forward(self, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.time_mlp(timestep_embedding(t, self.dim)) + self.class_emb(c)


class _ResMLPBlock(nn.Module):
    def __init__(self, hidden: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h, emb):
        z = F.silu(self.fc1(self.norm(h)) + self.emb(emb))
        return h + self.fc2(z)


class DenoiserMLP(nn.Module):
    """A residual MLP eps_theta(x_t, t, c) over flattened pixels: enough for 8x8 digits.

    Input and output are images ``(B, C, H, W)``; the timestep and the class enter
    every block through a shared embedding.
    """

    def __init__(self, image_shape=(1, 8, 8), num_classes: int = 10, hidden: int = 256, depth: int = 3,
                 emb_dim: int = 128):
        super().__init__()
        self.image_shape = tuple(image_shape)
        n = math.prod(self.image_shape)
        self.cond = _Conditioning(num_classes, emb_dim)
        self.inp = nn.Linear(n, hidden)
        self.blocks = nn.ModuleList([_ResMLPBlock(hidden, emb_dim) for _ in range(depth)])
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, n)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        emb = self.cond(t, c)
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.out_norm(h))).view(-1, *self.image_shape)


class _ResConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int = 8):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class TinyUNet(nn.Module):
    """A two-level UNet eps_theta(x_t, t, c) for 28x28 (or any size divisible by 4) images.

    ``base`` channels at full resolution, ``2 * base`` at 1/2 and 1/4; one residual
    block a level on each side, skip connections by concatenation.
    """

    def __init__(self, image_shape=(1, 28, 28), num_classes: int = 10, base: int = 32, emb_dim: int = 128):
        super().__init__()
        self.image_shape = tuple(image_shape)
        ch, h, w = self.image_shape
        if h % 4 or w % 4:
            raise ValueError(f"TinyUNet needs height and width divisible by 4, got {h}x{w}")
        b2 = 2 * base
        self.cond = _Conditioning(num_classes, emb_dim)
        self.inp = nn.Conv2d(ch, base, 3, padding=1)
        self.down1 = _ResConvBlock(base, base, emb_dim)
        self.pool1 = nn.Conv2d(base, base, 3, stride=2, padding=1)
        self.down2 = _ResConvBlock(base, b2, emb_dim)
        self.pool2 = nn.Conv2d(b2, b2, 3, stride=2, padding=1)
        self.mid = _ResConvBlock(b2, b2, emb_dim)
        self.up2 = nn.ConvTranspose2d(b2, b2, 4, stride=2, padding=1)
        self.dec2 = _ResConvBlock(2 * b2, b2, emb_dim)
        self.up1 = nn.ConvTranspose2d(b2, base, 4, stride=2, padding=1)
        self.dec1 = _ResConvBlock(2 * base, base, emb_dim)
        self.out_norm = nn.GroupNorm(8, base)
        self.out = nn.Conv2d(base, ch, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        emb = self.cond(t, c)
        h0 = self.down1(self.inp(x), emb)                  # H
        h1 = self.down2(self.pool1(h0), emb)               # H/2
        h = self.mid(self.pool2(h1), emb)                  # H/4
        h = self.dec2(torch.cat([self.up2(h), h1], 1), emb)
        h = self.dec1(torch.cat([self.up1(h), h0], 1), emb)
        return self.out(F.silu(self.out_norm(h)))


def build_denoiser(kind: str, image_shape, num_classes: int = 10, **kwargs) -> nn.Module:
    """``"mlp"`` -> :class:`DenoiserMLP`, ``"unet"`` -> :class:`TinyUNet`."""
    if kind == "mlp":
        return DenoiserMLP(image_shape, num_classes, **kwargs)
    if kind == "unet":
        return TinyUNet(image_shape, num_classes, **kwargs)
    raise ValueError(f"unknown denoiser kind {kind!r}; use 'mlp' or 'unet'")
