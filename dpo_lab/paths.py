"""Where the files the course ships are, in a checkout and in an installed package alike.

The repository keeps them in one folder at its top, ``data/``, for learners to read. A wheel
(``pip install dpo_lab``, ``pip install git+https://...``) carries the same files inside the
package, as ``dpo_lab/_data/`` (``pyproject.toml`` maps ``data/`` there; the name is not
``data`` because ``dpo_lab/data.py`` is a module). In a checkout, whether installed editable or
imported from the source tree, ``dpo_lab/_data`` does not exist and the files are read from
``data/`` itself. Either way there is one physical copy, found through ``importlib.resources``,
and the rebuild commands (``python -m dpo_lab.tokenizer`` and the task modules) write to it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGED = "_data"  # the folder name of data/ inside an installed wheel


def data_dir() -> Path:
    """The folder holding the shipped data: ``dpo_lab/_data`` when installed, else the checkout's ``data/``."""
    package = resources.files("dpo_lab")
    if not isinstance(package, Path):  # e.g. imported from a zip file: no folder to hand out
        raise FileNotFoundError(f"dpo_lab is imported from {package}, not a folder; install it with pip")
    for candidate in (package / PACKAGED, package.parent / "data"):
        if (candidate / "tokenizer").is_dir():
            return candidate
    raise FileNotFoundError(
        f"the course's data is neither in {package / PACKAGED} (an installed wheel) nor in "
        f"{package.parent / 'data'} (a checkout); reinstall dpo_lab, e.g. pip install 'dpo_lab[course]'"
    )


def data_path(name: str) -> Path:
    """The path of one shipped file or folder, e.g. ``data_path("sentiment_reviews.jsonl")``."""
    return data_dir() / name
