"""Helpers for the install tests: a copy of the checkout, and throwaway virtual environments.

Building a real environment from an index takes minutes (torch alone is hundreds of MB), so a
throwaway environment here reuses the packages already installed in the environment running the
tests, honestly restricted: :func:`make_venv` links into it only the distributions that the named
requirements need (their transitive closure under the installed versions), nothing else. A module
that a declared requirement does not bring (say ``trl`` for the core install) is absent there, as
it would be after a fresh ``pip install``. What this does not prove: that pip would pick these
versions from an index (set ``DPO_LAB_FRESH_INSTALL=1`` for that slow path: see test_wheel.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def declared(*groups: str) -> list[str]:
    """Requirement strings of pyproject's core list ("core") and of the named extras."""
    project = pyproject()["project"]
    out = []
    for group in groups:
        out += project["dependencies"] if group == "core" else project["optional-dependencies"][group]
    return out


def snapshot(dest: Path) -> Path:
    """Copy the checkout's files (tracked, and untracked but not ignored) to ``dest``, as a clone would hold them."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(src.read_bytes())
    return dest


def closure(requirements: list[str]) -> set[str]:
    """Names of the installed distributions that ``requirements`` need, transitively (extras followed)."""
    seen: set[str] = set()
    stack = [(Requirement(r), "") for r in requirements]
    while stack:
        req, extra = stack.pop()
        if req.marker and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(name)  # PackageNotFoundError: the test environment lacks a declared package
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or sub.marker.evaluate({"extra": ""}):
                stack.append((sub, ""))
            for wanted in req.extras:
                if sub.marker is not None and sub.marker.evaluate({"extra": wanted}):
                    stack.append((sub, wanted))
    return {key.split("[")[0] for key in seen}


def make_venv(path: Path, requirements: list[str], extra_dists: tuple[str, ...] = ()) -> Path:
    """A virtual environment at ``path`` that sees exactly the installed distributions ``requirements`` need.

    The distributions' files are symlinked into one folder that a ``.pth`` file puts on the new
    environment's path, after its own site-packages (where pip then installs what a test installs).
    Returns the environment's python.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    shared = path / "shared-site-packages"
    shared.mkdir()
    here = Path(sysconfig.get_paths()["purelib"])
    for name in sorted(closure(requirements) | set(extra_dists)):
        dist = metadata.distribution(name)
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            target, link = base / top, shared / top
            if top.endswith(".pth") or link.exists() or not target.exists() or top == "__pycache__":
                continue
            link.symlink_to(target)
    assert base.exists() and here.exists()
    (site / "zz_shared.pth").write_text(str(shared) + "\n")
    return python


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without anything that would import dpo_lab from the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "DPO_LAB_PROFILE": "tiny"}, **extra)
    return env
