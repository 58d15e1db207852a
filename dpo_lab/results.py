"""Saving a notebook's headline numbers to ``results/NN_topic.json``.

The file is git-ignored: it is what *this* run measured, for a learner to compare
with the text or for an instructor to collect across a class.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def repo_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` holding ``pyproject.toml`` and ``dpo_lab/``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() and (folder / "dpo_lab").is_dir():
            return folder
    return None


def results_dir() -> Path:
    """``$DPO_LAB_RESULTS`` if set, else ``<repo>/results``, else ``./results``."""
    if os.environ.get("DPO_LAB_RESULTS"):
        return Path(os.environ["DPO_LAB_RESULTS"])
    root = repo_root()
    return (root if root is not None else Path.cwd()) / "results"


def _plain(value):
    """Turn tensors, NumPy scalars and arrays into JSON-ready Python values."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value


def save_results(name: str, results: dict) -> Path:
    """Write ``results`` to ``results/<name>.json`` (name like ``"01_deriving_dpo"``).

    The claims the notebook has made so far (:func:`dpo_lab.claims.claim`) are stored with
    them under ``"claims"``.
    """
    if not name or "/" in name or name.endswith(".json"):
        raise ValueError(f"results name {name!r} should be a bare name like '01_deriving_dpo'")
    from dpo_lab.claims import claims_records

    recorded = claims_records()
    if recorded and "claims" not in results:
        # every claim() of the notebook so far: value, interval, threshold, margin, holds
        results = {**results, "claims": recorded}
    for row in recorded:  # and each claim's interval under its own name: "<claim>_ci": [lo, hi]
        if row["lower"] is not None:
            results.setdefault(f"{row['claim']}_ci", [row["lower"], row["upper"]])
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(_plain(results), indent=2, sort_keys=True) + "\n")
    print(f"saved {len(results)} results to {path}")
    return path

