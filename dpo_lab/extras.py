"""Optional packages, and a clear message when one is missing.

``dpo_lab`` imports only its core dependencies at module level (torch, transformers, tokenizers,
numpy, pandas, matplotlib, tqdm). The notebooks and some functions (Hub loaders, the TRL
benchmark, LoRA, the scikit-learn baselines) need more; ``pyproject.toml`` lists those in the
``course`` extra. A function that needs one imports it with :func:`require`, so that a missing
package says which extra brings it::

    datasets = require("datasets")
"""

from __future__ import annotations

import importlib
from types import ModuleType

# import name -> distribution name, for the packages of the `course` extra that functions import
COURSE = {"trl": "trl", "peft": "peft", "accelerate": "accelerate", "datasets": "datasets",
          "sklearn": "scikit-learn", "PIL": "pillow", "psutil": "psutil"}


class MissingExtra(ModuleNotFoundError):
    """An optional package is not installed; the message names the extra that installs it."""


def require(module: str, extra: str = "course") -> ModuleType:
    """Import ``module`` (e.g. ``"trl"``, ``"sklearn.linear_model"``) or raise :class:`MissingExtra`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        top = module.split(".")[0]
        if err.name is None or err.name.split(".")[0] != top:
            raise  # the package is there but something it imports is not: not ours to rename
        dist = COURSE.get(top, top)
        raise MissingExtra(
            f"{module} is not installed; it comes with dpo_lab's `{extra}` extra: "
            f"pip install 'dpo_lab[{extra}]' (in a checkout: pip install -r requirements.txt), "
            f"or just pip install {dist}",
            name=err.name,
        ) from err
