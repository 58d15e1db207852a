"""Set-up every notebook makes first: profile, device, seeds, versions.

A notebook runs in one of two profiles, picked by the ``DPO_LAB_PROFILE``
environment variable:

* ``tiny``: a laptop CPU or CI; tiny models trained from scratch, offline data.
* ``full``: a Colab-sized GPU; pretrained Hub checkpoints and Hub datasets.

When the variable is unset the profile is ``full`` if a CUDA GPU is present and
``tiny`` otherwise. Both profiles run the same functions; only sizes differ.
"""

from __future__ import annotations

import os
import platform
import random
import sys

import numpy as np
import torch

PROFILES = ("tiny", "full")


def get_profile() -> str:
    """Return ``"tiny"`` or ``"full"`` (see the module docstring for the rule)."""
    value = os.environ.get("DPO_LAB_PROFILE", "").strip().lower()
    if not value:
        return "full" if torch.cuda.is_available() else "tiny"
    if value not in PROFILES:
        raise ValueError(
            f"DPO_LAB_PROFILE={value!r} is not a profile; use one of {PROFILES}"
        )
    return value


def get_device(prefer: str | None = None) -> torch.device:
    """Pick the device: ``prefer`` if given, else cuda, then mps, then cpu."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so runs repeat exactly on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def pick_config(configs: dict[str, dict], profile: str | None = None) -> dict:
    """Return the config dict of the current profile from ``{"tiny": {...}, "full": {...}}``.

    The dicts stay visible in the notebook so a learner can turn the knobs;
    this helper only picks one and says clearly when a profile is missing.
    """
    profile = profile or get_profile()
    if profile not in configs:
        raise KeyError(f"no config for profile {profile!r}; the notebook defines {sorted(configs)}")
    return dict(configs[profile])


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries the course uses (``"missing"`` if absent)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "datasets", "peft", "trl", "numpy", "pandas", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "missing"
    out["dpo_lab"] = _dpo_lab_version()
    return out


def _dpo_lab_version() -> str:
    from dpo_lab import __version__

    return __version__


def setup_notebook(seed: int = 0, quiet: bool = False, threads: int | None = None) -> dict:
    """The first call of every notebook: seed everything, print versions, device, profile.

    ``threads`` sets PyTorch's CPU threads. By default the tiny profile on a CPU uses
    one: its tensors are too small for threads to pay, and when the cores are shared
    (another notebook, CI, a browser) PyTorch's worker threads wait on each other. We
    measured 20 SFT steps of the tiny GPT-2 at 1.6 s with one thread and 28 s with two
    on a busy 2-core machine.

    Returns ``{"profile", "device", "seed", "versions"}`` so later cells can use them.
    """
    seed_everything(seed)
    profile = get_profile()
    if threads is None and profile == "tiny" and get_device().type == "cpu":
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)
    # Deterministic kernels where PyTorch has them; warn (not fail) where it has not.
    torch.use_deterministic_algorithms(True, warn_only=True)
    info = {
        "profile": profile,
        "device": get_device(),
        "seed": seed,
        "versions": versions(),
    }
    if not quiet:
        vers = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        print(f"{vers}")
        gpu = torch.cuda.get_device_name(0) if info["device"].type == "cuda" else "none"
        print(f"profile: {info['profile']} | device: {info['device']} (GPU: {gpu}) | "
              f"threads: {torch.get_num_threads()} | seed: {seed} | {sys.platform}")
    return info


# The lowest versions the course was tested with (requirements.txt says the same;
# a test keeps the two in step). TRL is also capped below its next minor release,
# because its trainer API moves between minor versions.
MIN_VERSIONS = {
    "torch": "2.13", "transformers": "5.24", "datasets": "5.2", "tokenizers": "0.23", "peft": "0.21",
    "trl": "1.16", "accelerate": "1.15", "numpy": "2.0", "pandas": "2.2", "matplotlib": "3.8",
    "scikit-learn": "1.5", "tqdm": "4.66",
}
MAX_EXCLUSIVE = {"transformers": "6", "trl": "1.17"}


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_environment() -> list[dict]:
    """One row a required package: installed version, the range needed, and what to do.

    ``status`` is ``"ok"``, ``"missing"``, ``"too old"`` or ``"too new"``; ``fix`` is the
    exact command that repairs it.
    """
    from importlib import metadata

    rows = []
    for pkg, low in MIN_VERSIONS.items():
        high = MAX_EXCLUSIVE.get(pkg)
        spec = f">={low}" + (f",<{high}" if high else "")
        try:
            installed = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None:
            status = "missing"
        elif _version_tuple(installed) < _version_tuple(low):
            status = "too old"
        elif high and _version_tuple(installed) >= _version_tuple(high):
            status = "too new"
        else:
            status = "ok"
        fix = "" if status == "ok" else f'pip install "{pkg}{spec}"'
        if status != "ok" and pkg == "torch":
            fix += "   (on a CPU-only machine: pip install torch==2.13.0, a CPU build)"
        rows.append({"package": pkg, "installed": installed or "-", "needed": spec, "status": status,
                     "fix": fix})
    return rows
