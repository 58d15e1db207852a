"""What the offline sweeps share: the command that writes a sweep's JSON, and its reader.

A sweep (``python -m dpo_lab.tasks.code_sweep``, ``...summarization_sweep``) chooses a notebook's
settings on validation items once, offline, and commits its results under ``data/``; the notebook
reads them back and checks that its own knobs are the ones the sweep ran with.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path


def read(path, module: str) -> dict:
    """The results ``python -m <module>`` wrote to ``path``; a missing file names the command that writes it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python -m {module}` to write it")
    return json.loads(path.read_text(encoding="utf-8"))


def main(doc: str, default_path, run: Callable[[], dict], argv=None) -> None:
    """``--out PATH`` (default ``default_path``): run the sweep and write its results as JSON."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", default=str(default_path), help="where to write the results (JSON)")
    args = parser.parse_args(argv)
    result = run()
    Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.out} in {result['seconds']:.0f} s; chosen on validation: {result['chosen']}")
