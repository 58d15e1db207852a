"""A small cache under ``runs/`` for work several notebooks share (an SFT model, pairs).

A cache entry is a folder ``runs/<name>-<key>``, where ``key`` hashes everything that
decides its contents (the config dict, and whatever the caller adds, such as the
tokenizer's files and the generator version). Change any of it and the key changes,
so a stale entry is never reused; delete ``runs/`` to rebuild everything.
"""

from __future__ import annotations

import hashlib
import json
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


def runs_dir() -> Path:
    root = repo_root()
    return (root if root is not None else Path.cwd()) / "runs"


def run_dir(name: str, config: dict) -> Path:
    """``runs/<name>-<key>``; writes the key's config to ``cache_key.json`` beside the contents."""
    folder = runs_dir() / f"{name}-{config_key(config)}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cache_key.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
    return folder
