"""The digits task of notebook 06: images of handwritten digits, a gold reward made of several
features that trade off, a proxy reward that can be gamed, and preference pairs made from them.

* ``tiny`` profile: scikit-learn's bundled 8x8 digits (1,797 images, no download).
* ``full`` profile: MNIST (28x28) from the Hugging Face Hub (``ylecun/mnist``), or any
  local directory in the Hub dataset's layout and schema (``image``: a PIL image,
  ``label``: an int), through the same loader and the same schema mapping.

Images are tensors ``(N, 1, H, W)`` in ``[-1, 1]`` (-1 is paper, +1 is ink), labels are
``(N,)`` int64. With u the pixel intensities in [0, 1], the gold reward of an image x
prompted with class c is (:func:`gold_reward`)

    r(x, c) = p_clf(c | x) * (crisp(x) - stray(x)) - ((ink(x) - ink_max)_+ / width)^2

* ``p_clf(c | x)``: the probability a digit classifier, trained on real digits, gives the
  prompted class. It multiplies the quality term, so a digit that is not a c earns nothing.
* ``crisp(x) = mean |2u - 1|``: 1 when every pixel is clean paper or full ink, 0 when all are grey.
* ``stray(x)``: ink with no ink around it, sum_ij u_ij * (1 - n_ij)_+, where n_ij is the ink of
  the 8 neighbours of pixel ij: the specks a diffusion model leaves on the paper.
* ``ink(x) = mean u`` (stroke boldness) costs nothing up to ``ink_max`` (the notebook takes
  the 99th percentile of real digits) and quadratically beyond.

The features pull against each other: more ink makes strokes crisper but adds specks and,
past ``ink_max``, costs; darkening the whole image greys the paper (less crisp) and adds ink.
So no single direction, such as "darker", raises the reward everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MNIST_HUB_ID = "ylecun/mnist"


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------


def to_model_range(pixels01: torch.Tensor) -> torch.Tensor:
    """[0, 1] intensities -> the [-1, 1] range the diffusion model works in."""
    return pixels01 * 2 - 1


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] model images -> [0, 1] intensities (for plots and the reward)."""
    return (images.clamp(-1, 1) + 1) / 2


def load_sklearn_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits (values 0..16), as ``(1797, 1, 8, 8)`` images in [-1, 1] and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return to_model_range(images), torch.tensor(d.target, dtype=torch.long)


def _image_to_array(image) -> np.ndarray:
    """One ``image`` field of the Hub schema (PIL image, ``{"bytes": ...}`` dict or array) -> uint8 HxW."""
    if isinstance(image, dict):
        import io

        from PIL import Image

        if image.get("bytes") is not None:
            image = Image.open(io.BytesIO(image["bytes"]))
        elif image.get("path"):
            image = Image.open(image["path"])
        else:
            raise ValueError("image dict has neither 'bytes' nor 'path'")
    if hasattr(image, "convert"):
        image = image.convert("L")
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"expected a grayscale HxW image, got shape {arr.shape}")
    return arr


def mnist_to_tensors(rows, source: str = "<dataset>") -> tuple[torch.Tensor, torch.Tensor]:
    """Map rows in MNIST's Hub schema (``image``, ``label``) to ``(images in [-1, 1], labels)``."""
    names = getattr(rows, "column_names", None)
    if names is not None and not {"image", "label"} <= set(names):
        raise ValueError(f"{source}: expected columns 'image' and 'label', found {names}")
    images, labels = [], []
    for i, row in enumerate(rows):
        for field in ("image", "label"):
            if field not in row:
                raise ValueError(f"{source}: row {i} has no field {field!r}")
        images.append(_image_to_array(row["image"]))
        labels.append(int(row["label"]))
    x = torch.tensor(np.stack(images), dtype=torch.float32).unsqueeze(1) / 255.0
    return to_model_range(x), torch.tensor(labels, dtype=torch.long)


def load_mnist(source: str = MNIST_HUB_ID, split: str = "train", limit: int | None = None, seed: int = 0):
    """MNIST as ``(images (N, 1, 28, 28) in [-1, 1], labels)``.

    ``source`` is a Hub dataset id (downloads; the ``full`` profile) or a local directory
    in the Hub layout, e.g. ``mnist/train-00000-of-00001.parquet`` written by
    ``Dataset.to_parquet`` or saved with ``save_to_disk``. Both go through
    :func:`mnist_to_tensors`. The split is shuffled with ``seed``; ``limit`` then keeps its first rows.
    """
    import datasets

    path = Path(source)
    if path.is_dir() and (path / "dataset_info.json").exists():
        ds = datasets.load_from_disk(str(path))
        ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    else:
        from dpo_lab.data import open_dataset

        ds = open_dataset(source, split)
    ds = ds.shuffle(seed=seed)  # then a limit takes a seeded sample, not the Hub's first rows
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    if len(ds) == 0:
        raise ValueError(f"no images: {source} [{split}] gave 0 rows (limit={limit})")
    return mnist_to_tensors(ds, source=f"{source} [{split}]")


def split_indices(n: int, test_fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of ``range(n)`` into (train, test) indices."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = int(round(n * test_fraction))
    return perm[n_test:], perm[:n_test]


# ----------------------------------------------------------------------------
# The digit classifier (the judge inside the gold reward)
# ----------------------------------------------------------------------------


class DigitClassifier(nn.Module):
    """An MLP over pixels: ``(N, 1, H, W)`` images in [-1, 1] -> 10 logits."""

    def __init__(self, image_shape=(1, 8, 8), hidden: int = 256, num_classes: int = 10):
        super().__init__()
        n = int(np.prod(image_shape))
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_classifier(images: torch.Tensor, labels: torch.Tensor, *, hidden: int = 256, steps: int = 1500,
                     batch_size: int = 128, lr: float = 2e-3, noise_std: float = 0.1,
                     weight_decay: float = 1e-4, seed: int = 0) -> DigitClassifier:
    """Train a :class:`DigitClassifier` with cross-entropy; inputs get Gaussian noise of std
    ``noise_std`` so that it also judges slightly noisy generated digits fairly."""
    gen = torch.Generator().manual_seed(seed)
    device = images.device
    with torch.random.fork_rng(devices=[]):  # seeded init that leaves the global RNG alone
        torch.manual_seed(seed)
        clf = DigitClassifier(tuple(images.shape[1:]), hidden).to(device)
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    clf.train()
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=gen).to(device)
        x = images[idx] + noise_std * torch.randn(images[idx].shape, generator=gen).to(device)
        loss = F.cross_entropy(clf(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return clf.eval().requires_grad_(False)


@torch.no_grad()
def class_logprob(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log p_clf(label | image)`` for each image, shape ``(N,)``."""
    dev = next(classifier.parameters()).device
    logits = classifier(images.to(dev))
    return F.log_softmax(logits.float(), -1).gather(1, labels.to(dev)[:, None]).squeeze(1).cpu()


@torch.no_grad()
def classifier_accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images the classifier assigns to their (prompted) label: prompt fidelity."""
    dev = next(classifier.parameters()).device
    pred = classifier(images.to(dev)).argmax(-1).cpu()
    return (pred == labels.cpu()).float().mean().item()


# ----------------------------------------------------------------------------
# Gold reward, preference pairs, diversity
# ----------------------------------------------------------------------------


def ink(images: torch.Tensor) -> torch.Tensor:
    """Stroke boldness: the mean pixel intensity in [0, 1] of each image, shape ``(N,)``."""
    return to_unit_range(images).flatten(1).mean(1).cpu()


def crispness(images: torch.Tensor) -> torch.Tensor:
    """``mean_ij |2 u_ij - 1|`` with u in [0, 1]: 1 for pure paper and ink, 0 for all grey; shape ``(N,)``."""
    return (2 * to_unit_range(images) - 1).abs().flatten(1).mean(1).cpu()


def stray_ink(images: torch.Tensor) -> torch.Tensor:
    """Ink with no ink next to it, ``sum_ij u_ij * (1 - n_ij)_+``, shape ``(N,)``.

    ``n_ij`` is the summed intensity of the 8 neighbours of pixel ij (paper outside the image).
    A pixel inside a stroke has at least one full pixel of ink around it and counts 0; a lone
    speck of ink ``u`` on clean paper counts ``u``. In pixels of ink, summed over the image.
    """
    u = to_unit_range(images.float()).cpu()
    kernel = torch.ones(1, 1, 3, 3)
    kernel[0, 0, 1, 1] = 0
    neighbours = F.conv2d(u.flatten(0, 1)[:, None], kernel, padding=1).view_as(u)
    return (u * (1 - neighbours).clamp(min=0)).flatten(1).sum(1)


def ink_limit(images: torch.Tensor, quantile: float = 0.99) -> float:
    """The ``quantile`` of real digits' :func:`ink`: the boldness above which the gold reward charges."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must lie in (0, 1], got {quantile}")
    return torch.quantile(ink(images), quantile).item()


def gold_features(images: torch.Tensor, labels: torch.Tensor, classifier: nn.Module) -> dict[str, torch.Tensor]:
    """The four features of the gold reward, one ``(N,)`` tensor each: ``p_class``, ``crisp``,
    ``stray`` and ``ink``."""
    return {"p_class": class_logprob(classifier, images, labels).exp(), "crisp": crispness(images),
            "stray": stray_ink(images), "ink": ink(images)}


def gold_reward(images: torch.Tensor, labels: torch.Tensor, classifier: nn.Module, ink_max: float,
                width: float = 0.1) -> torch.Tensor:
    """``r(x, c) = p_clf(c | x) * (crisp(x) - stray(x)) - ((ink(x) - ink_max)_+ / width)^2``.

    One value an image; the features and why they trade off are in the module docstring.
    ``ink_max`` is a boldness real digits rarely exceed (:func:`ink_limit`); ``width`` is how far
    past it the penalty reaches 1.
    """
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    f = gold_features(images, labels, classifier)
    too_bold = ((f["ink"] - ink_max).clamp(min=0) / width) ** 2
    return f["p_class"] * (f["crisp"] - f["stray"]) - too_bold


def proxy_reward(images: torch.Tensor, labels: torch.Tensor, classifier: nn.Module,
                 bold_bonus: float = 4.0) -> torch.Tensor:
    """A gameable stand-in for the gold reward: ``p_clf(c | x) * crisp(x) + bold_bonus * ink(x)``.

    A judge who likes recognisable, crisp and bold digits, but does not look for stray specks
    and has no upper limit on boldness: the two things :func:`gold_reward` charges for.
    """
    f = gold_features(images, labels, classifier)
    return f["p_class"] * f["crisp"] + bold_bonus * f["ink"]


def make_pairs(images_a: torch.Tensor, images_b: torch.Tensor, rewards_a: torch.Tensor,
               rewards_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Order each pair (a[i], b[i]) by reward: returns ``(x_w, x_l, a_won)``, the winner being the
    higher-reward image (a on ties)."""
    a_won = rewards_a >= rewards_b
    mask = a_won.view(-1, *([1] * (images_a.ndim - 1)))
    x_w = torch.where(mask, images_a, images_b)
    x_l = torch.where(mask, images_b, images_a)
    return x_w, x_l, a_won


def win_rate(rewards_new: torch.Tensor, rewards_old: torch.Tensor) -> float:
    """Fraction of paired samples where the new reward beats the old; ties count one half
    (:func:`dpo_lab.evaluate.win_rate` on tensors)."""
    from dpo_lab.evaluate import win_rate as paired_win_rate

    return paired_win_rate(rewards_new.cpu().numpy(), rewards_old.cpu().numpy())


def diversity(images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean pairwise RMS pixel distance (in [0, 1] intensities) between samples of the same class,
    averaged over classes: 0 when a class has collapsed to one image."""
    x = to_unit_range(images).flatten(1).cpu()
    labels = labels.cpu()
    per_class = []
    for c in labels.unique():
        xc = x[labels == c]
        if len(xc) < 2:
            continue
        d = torch.cdist(xc, xc) / xc.shape[1] ** 0.5
        n = len(xc)
        per_class.append((d.sum() / (n * (n - 1))).item())
    return float(np.mean(per_class))


def image_grid(images: torch.Tensor, ncols: int, pad: int = 1) -> np.ndarray:
    """Tile ``(N, 1, H, W)`` images in [-1, 1] row by row into one [0, 1] array (white padding),
    so a whole grid is a single ``imshow``."""
    x = to_unit_range(images.detach().float().cpu())[:, 0].numpy()
    n, h, w = x.shape
    nrows = -(-n // ncols)
    out = np.zeros((nrows * (h + pad) + pad, ncols * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = x[i]
    return out
