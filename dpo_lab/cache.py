"""A small cache under ``runs/`` for work several notebooks share (an SFT model, pairs).

A cache entry is a folder ``runs/<name>-<key>``, where ``key`` hashes everything that
decides its contents (the config dict, and whatever the caller adds: the tokenizer's files,
the generator version, and the source of the modules that produce it, :func:`code_version`).
Change any of it and the key changes, so a stale entry is never reused; delete ``runs/``
to rebuild everything.

CI executes two notebooks at a time, and notebooks 02, 03, 07 and 08 share one SFT model.
So an entry is built under a lock (the second notebook waits, then loads what the first
built) and in a ``.partial`` folder that is renamed into place only when complete: a crash
or a killed kernel never leaves a half-written entry that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from dpo_lab.results import repo_root


def config_key(config: dict) -> str:
    """A short, stable hash of a JSON-serialisable dict (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def file_digest(*paths: Path) -> str:
    """sha256 of the bytes of ``paths`` (files, or every file in a folder), for cache keys."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def code_version(*modules: str) -> str:
    """A digest of the source of ``dpo_lab`` modules (``"train"``, ``"models"``...), for cache keys.

    A cached model depends on the code that trained it as much as on its config: after a fix
    to the training loop an entry keyed on the config alone would be silently reused. Put the
    modules that produce an entry in its key, and a change to any of them rebuilds it.
    """
    package = Path(__file__).resolve().parent
    paths = [package / f"{name.replace('.', '/')}.py" for name in modules]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"code_version: no dpo_lab module at {missing}")
    return file_digest(*paths)


#: the modules whose source decides what an SFT model learns (load, tokenize, train, precision)
SFT_CODE = ("models", "collate", "logprobs", "precision", "train")


def runs_dir() -> Path:
    """``$DPO_LAB_RUNS`` if set (the tests' smoke runs use their own), else ``<repo>/runs``, else ``./runs``."""
    if os.environ.get("DPO_LAB_RUNS"):
        return Path(os.environ["DPO_LAB_RUNS"])
    root = repo_root()
    return (root if root is not None else Path.cwd()) / "runs"


@contextlib.contextmanager
def file_lock(path: Path, poll_s: float = 0.2):
    """Hold an exclusive lock on the file ``path`` while the ``with`` block runs.

    The operating system releases the lock when the process dies, so a crashed notebook
    never leaves a lock behind (unlike a lock *file* whose existence is the lock).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        if os.name == "nt":  # Windows: msvcrt locks a byte range; retry until it is free
            import msvcrt

            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
                    break
                except OSError:
                    time.sleep(poll_s)
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # blocks until the other holder is done
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def cached(name: str, config: dict, build: Callable[[Path], object], load: Callable[[Path], object]):
    """``(load(folder), folder, True)`` if ``runs/<name>-<key>`` exists, else build it.

    ``build(folder)`` writes the entry's files into ``folder`` (a ``.partial`` folder that is
    renamed to the entry's name once ``build`` returns) and returns what the caller needs;
    the result is then ``(build(...), folder, False)``. ``config`` is saved beside the
    contents as ``cache_key.json``, so a learner can see what an entry was made from.
    """
    folder = runs_dir() / f"{name}-{config_key(config)}"
    with file_lock(folder.parent / f"{folder.name}.lock"):
        if folder.is_dir():  # only a finished build is ever renamed to this name
            print(f"loading the cached {name} from {folder}")
            return load(folder), folder, True
        partial = folder.parent / f"{folder.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)  # left by a build that crashed
        partial.mkdir(parents=True)
        result = build(partial)
        (partial / "cache_key.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(partial, folder)
        return result, folder, False
