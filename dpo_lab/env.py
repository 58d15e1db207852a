"""Set-up every notebook makes first: profile, device, seeds, versions.

A notebook runs in one of two profiles, picked by the ``DPO_LAB_PROFILE``
environment variable:

* ``tiny``: a laptop CPU or CI; tiny models trained from scratch, offline data.
* ``full``: a Colab-sized GPU; pretrained Hub checkpoints and Hub datasets.

When the variable is unset the profile is ``full`` if a CUDA GPU is present and
``tiny`` otherwise. Both profiles run the same functions; only sizes differ.

The device is decided once, by :func:`get_device`: ``DPO_LAB_DEVICE`` (``cpu``, ``cuda``,
``cuda:1``, ``mps``) when set; otherwise the CPU in the tiny profile (its asserts were
calibrated there, and MPS or a GPU gives other numbers) and the best accelerator in the full one.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import sys
import time

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
    """The device: ``prefer`` if given, else ``$DPO_LAB_DEVICE``, else the profile's default.

    The tiny profile runs on the CPU even where a GPU or Apple's MPS is present (its numbers
    and asserts were calibrated on a CPU); set ``DPO_LAB_DEVICE=mps`` or ``cuda`` to use one.
    The full profile takes CUDA, then MPS, then the CPU.
    """
    choice = prefer or os.environ.get("DPO_LAB_DEVICE", "").strip().lower()
    if choice:
        try:
            device = torch.device(choice)
        except RuntimeError as err:
            raise ValueError(f"DPO_LAB_DEVICE={choice!r} is not a device; use cpu, cuda, cuda:N or mps") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {choice!r} asked for, but PyTorch sees no CUDA GPU here")
        if device.type == "mps" and not _mps_available():
            raise ValueError(f"device {choice!r} asked for, but PyTorch's MPS backend is not available here")
        return device
    if get_profile() == "tiny":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so runs repeat exactly on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def get_seed(default: int = 0) -> int:
    """The run's seed: ``DPO_LAB_SEED`` if set (a non-negative integer), else ``default``.

    :func:`setup_notebook` seeds everything with it, and :func:`pick_config` puts it in the
    config's ``seed``, which the notebook's training runs and data shuffles read, so
    ``DPO_LAB_SEED=1`` reruns a notebook on another seed with nothing else changed (samplers
    given a literal seed vary only through the global one). Cached SFT models are keyed by the
    seed, so a new seed also trains a new SFT model.
    """
    value = os.environ.get("DPO_LAB_SEED", "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise ValueError(f"DPO_LAB_SEED={value!r} is not a seed; use a non-negative integer such as 0 or 1")
    return int(value)


SCALES = ("normal", "smoke")


def get_scale() -> str:
    """``"smoke"`` when ``DPO_LAB_SCALE=smoke`` (CI's cut-down full profile), else ``"normal"``."""
    value = os.environ.get("DPO_LAB_SCALE", "").strip().lower() or "normal"
    if value not in SCALES:
        raise ValueError(f"DPO_LAB_SCALE={value!r} is not a scale; use one of {SCALES}")
    return value


# --- smoke scale: the same config with its counts cut --------------------------------
# A key is a *count* (of examples, steps, samples, a batch) when its name says so; only
# those are cut. Ids, column names, lengths (max_length, max_new_tokens), model sizes,
# learning rates, betas and precision are never touched.
_COUNT_EXACT = {"steps", "epochs", "batch_size", "checkpoints", "data_limit", "eval_samples",
                "samples_per_prompt", "seeds_per_size", "heldout_pairs", "frontier_betas", "probe_pairs",
                "rerank_n", "bon_n", "k", "rloo_k",
                # notebook 06's diffusion steps: a count of denoising steps (the schedule is rebuilt from
                # it); at T = 200 every sample is 200 UNet passes, minutes on a CPU even at smoke scale
                "T"}
_COUNT_PREFIXES = ("n_",)
_COUNT_SUFFIXES = ("_steps", "_epochs", "_batch_size", "_batch", "_samples", "_per_task", "_per_class",
                   "_per_step", "_every", "_checkpoints", "_pairs")
_NOT_COUNTS = {"n_layer", "n_embd", "n_head", "n_positions", "n_inner", "n_responses", "n_prompts"}
#: lists of counts and the entries smoke scale keeps: the two largest data sizes (the small ones
#: leave some pairs seen one way only), the two smallest best-of-N sizes
_COUNT_LISTS = {"data_sizes": slice(-2, None), "bon_ns": slice(0, 2)}
#: the smallest value a cut count takes: enough for every code path (a pair needs two samples,
#: an RLOO group two members, a split two items)
SMOKE_MIN = 2
#: the smallest number of optimisation steps: a benchmark times steps after two warm-up steps
SMOKE_MIN_STEPS = 4
#: the smallest number of samples a prompt: with two, a prompt's samples often all tie (all pass, or
#: all fail), and no preference pair comes out of it
SMOKE_MIN_SAMPLES = 4
#: counts are divided by this (then floored at SMOKE_MIN)
SMOKE_FACTOR = 100


def is_count_key(key: str) -> bool:
    """Whether a config key names a count that smoke scale may cut."""
    if key in _NOT_COUNTS:
        return False
    return key in _COUNT_EXACT or key.startswith(_COUNT_PREFIXES) or key.endswith(_COUNT_SUFFIXES)


def smoke_value(key: str, value):
    """``value`` cut for smoke scale if ``key`` is a count (see :func:`is_count_key`), else unchanged.

    Integers are divided by :data:`SMOKE_FACTOR` and floored at :data:`SMOKE_MIN` (never
    raised: a count already small stays as it is); fractional epochs become at most 1; a
    list of counts keeps two entries (see ``_COUNT_LISTS``).
    """
    if not is_count_key(key) or isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        floor = SMOKE_MIN
        if key in ("steps", "T") or key.endswith("_steps"):
            floor = SMOKE_MIN_STEPS
        elif key.endswith("samples") or key == "samples_per_prompt":
            floor = SMOKE_MIN_SAMPLES
        return min(value, max(floor, value // SMOKE_FACTOR))
    if isinstance(value, float):
        return min(value, 1.0)
    return value


def smoke_config(config: dict) -> dict:
    """The smoke-scale copy of one profile's config: only its counts are cut."""
    out = {}
    for key, value in config.items():
        if isinstance(value, list) and key in _COUNT_LISTS:
            out[key] = value[_COUNT_LISTS[key]]
        elif isinstance(value, dict) and not key.endswith("sizes"):
            out[key] = smoke_config(value) if all(isinstance(k, str) for k in value) else value
        else:
            out[key] = smoke_value(key, value)
    # a cut total must stay a multiple of the cadences that divide it: rounded up to one
    for total, every, splits in _MULTIPLES:
        values = [out.get(every), *(out.get(k, k) for k in splits)]
        if isinstance(out.get(total), int) and all(isinstance(v, int) for v in values):
            unit = values[0] * math.lcm(*values[1:])
            out[total] = -(-out[total] // unit) * unit
    return out


# (total, cadence, splits): the total must be a multiple of cadence x lcm(splits), so that every
# split of it (into that many evaluations; an int is a constant) lands on a cadence step.
# Notebook 08 probes every `probe_every` steps and evaluates at `overopt_checkpoints` (its fixes at 2)
# evenly spaced steps; notebook 03 evaluates RLOO every `rloo_eval_every` steps; notebook 06 tracks
# every `track_every` DPO steps.
_MULTIPLES = (("steps", "probe_every", ()), ("overopt_steps", "probe_every", ("overopt_checkpoints", 2)),
              ("rloo_steps", "rloo_eval_every", ()), ("dpo_steps", "track_every", ()))


def pick_config(configs: dict[str, dict], profile: str | None = None, scale: str | None = None) -> dict:
    """Return the config dict of the current profile from ``{"tiny": {...}, "full": {...}}``.

    The dicts stay visible in the notebook so a learner can turn the knobs;
    this helper only picks one and says clearly when a profile is missing.
    At ``DPO_LAB_SCALE=smoke`` (or ``scale="smoke"``) the counts are cut (:func:`smoke_config`).
    """
    profile = profile or get_profile()
    if profile not in configs:
        raise KeyError(f"no config for profile {profile!r}; the notebook defines {sorted(configs)}")
    config = dict(configs[profile])
    if "seed" in config:
        config["seed"] = get_seed(config["seed"])  # DPO_LAB_SEED, when set, overrides the notebook's seed
    if (scale or get_scale()) == "smoke":
        config = smoke_config(config)
    return config


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


def setup_notebook(seed: int | None = None, quiet: bool = False, threads: int | None = None) -> dict:
    """The first call of every notebook: seed everything, print versions, device, profile.

    ``seed``: ``None`` (the set-up cell's call) reads ``DPO_LAB_SEED``, default 0 (:func:`get_seed`).

    ``threads`` sets PyTorch's CPU threads. By default the tiny profile on a CPU uses
    one: its tensors are too small for threads to pay, and when the cores are shared
    (another notebook, CI, a browser) PyTorch's worker threads wait on each other. We
    measured 20 SFT steps of the tiny GPT-2 at 1.6 s with one thread and 28 s with two
    on a busy 2-core machine. The same holds at smoke scale (the stand-in Hub's models are tiny):
    two smoke runs sharing CI's two cores took 526 s with PyTorch's default threads.

    It also starts the notebook's clock, which :func:`report_run` reads in the last cell.

    Returns ``{"profile", "device", "seed", "versions"}`` so later cells can use them.
    """
    _RUN["start"] = time.perf_counter()
    seed = get_seed() if seed is None else seed
    seed_everything(seed)
    profile = get_profile()
    if threads is None and (profile == "tiny" or get_scale() == "smoke") and get_device().type == "cpu":
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)
    # Deterministic kernels where PyTorch has them; warn (not fail) where it has not.
    torch.use_deterministic_algorithms(True, warn_only=True)
    # transformers' own bars ("Loading weights", "Writing model shards") are widgets a saved notebook keeps at
    # "0%"; the course's loops draw dpo_lab.progress bars instead. (Hub downloads keep theirs.)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
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
        why = "DPO_LAB_DEVICE" if os.environ.get("DPO_LAB_DEVICE") else f"the {profile} profile's default"
        print(f"profile: {info['profile']} | device: {info['device']} ({why}; GPU: {gpu}) | "
              f"threads: {torch.get_num_threads()} | seed: {seed} | {sys.platform}")
    return info


_RUN: dict = {}
RUN_MARKER = "dpo_lab run:"  # the prefix of report_run's line; the README's syllabus table reads it


def report_run() -> dict:
    """The last call of every notebook: print how long it ran, in which profile, on what.

    One line, ``dpo_lab run: {json}``, from :func:`setup_notebook` to here (the set-up
    cell's clone and install are not counted). The notebook keeps it in its committed
    output, and ``python -m dpo_lab.syllabus`` builds the README's syllabus table from it.
    """
    if "start" not in _RUN:
        raise RuntimeError("report_run() needs setup_notebook() to have run first (the set-up cell)")
    device = get_device()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    record = {
        "profile": get_profile(),
        "seconds": round(time.perf_counter() - _RUN["start"], 1),
        "device": device.type,
        "hardware": (torch.cuda.get_device_name(device) if device.type == "cuda"
                     else f"{cores} CPU cores, {torch.get_num_threads()} thread(s)"),
        "peak_gpu_mib": (round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None),
        "scale": os.environ.get("DPO_LAB_SCALE") or None,
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "platform": sys.platform,
    }
    print(f"{RUN_MARKER} {json.dumps(record, sort_keys=True)}")
    return record


# The lowest versions the course needs (pyproject.toml says the same; tests/test_dependencies.py
# keeps the two in step). TRL is also capped below its next minor release,
# because its trainer API moves between minor versions.
MIN_VERSIONS = {
    "torch": "2.6", "transformers": "5.24", "datasets": "5.2", "tokenizers": "0.23", "peft": "0.21",
    "trl": "1.16", "accelerate": "1.15", "numpy": "2.0", "pandas": "2.2", "matplotlib": "3.8",
    "scikit-learn": "1.5", "tqdm": "4.66",
}
MAX_EXCLUSIVE = {"transformers": "6", "trl": "1.17"}
COURSE_EXTRA = {"datasets", "peft", "trl", "accelerate", "scikit-learn"}  # the rest are core dependencies


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
        if status == "missing" and pkg in COURSE_EXTRA:
            fix += "   (or all of the course's packages: pip install 'dpo_lab[course]')"
        if status != "ok" and pkg == "torch":
            fix += "   (on a CPU-only machine: pip install torch==2.13.0, a CPU build)"
        rows.append({"package": pkg, "installed": installed or "-", "needed": spec, "status": status,
                     "fix": fix})
    return rows
