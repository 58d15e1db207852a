"""``python -m dpo_lab.seeds``: run notebooks at other seeds and report their headline claims.

A result that holds at seed 0 only is an accident of one draw of weights, data order and
samples. Each notebook names one **headline** claim (``metadata.dpo_lab.headline``, the one
sentence it would be quoted for); this module executes notebooks in the tiny profile with
``DPO_LAB_SEED`` set (read by ``setup_notebook`` and ``pick_config``: training, sampling,
shuffles and the cached SFT models are all per seed) and reports each headline's value,
interval and whether it held::

    python -m dpo_lab.seeds                    # seeds 1 and 2, every notebook (about 2 x 30 min)
    python -m dpo_lab.seeds --seeds 1 02 05    # seed 1, notebooks 02 and 05 (--seeds 1,2 for both seeds)
    python -m dpo_lab.seeds --all-claims 04    # go on past a failed claim and list every claim that fails
    python -m dpo_lab.seeds --keep runs/seeds 04   # also write each executed notebook there

Notebooks run from the checkout's ``notebooks/`` folder in memory: nothing in the repository is
rewritten. In the tiny profile a claim that fails stops its notebook; the report then says
which claim failed. CI runs seed 1 for the notebooks whose tiny run takes under 90 s.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from dpo_lab.claims import describe

REPO = Path(__file__).resolve().parent.parent


def notebooks(root: Path = REPO) -> list[Path]:
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def headline(nb) -> str:
    """The name of the notebook's headline claim (its metadata says which)."""
    name = nb.metadata.get("dpo_lab", {}).get("headline")
    if not name:
        raise KeyError("the notebook names no headline claim: set metadata.dpo_lab.headline to a claim's name")
    return name


def recorded_claims(nb) -> list[dict] | None:
    """The claim rows the notebook's last cell stored as JSON (``report_claims``), if it ran."""
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    for output in last.get("outputs", []):
        data = output.get("data", {}).get("application/json")
        if data and "claims" in data:
            return data["claims"]
    return None


def execute(path: Path, seed: int, timeout: int = 1800, all_claims: bool = False, figures: bool = False):
    """Execute notebook ``path`` in the tiny profile at ``seed``; return (notebook, error or None, seconds)."""
    import nbformat

    from dpo_lab.extras import require

    nbclient = require("nbclient", extra="dev")  # the notebook runner the tests use
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # a run that stops early must not leave the committed outputs to be read as its own
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    env = {**os.environ, "DPO_LAB_PROFILE": "tiny", "DPO_LAB_SEED": str(seed), "MPLBACKEND": "Agg",
           "PYTHONPATH": str(path.resolve().parent.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("DPO_LAB_SCALE", None)
    env.pop("DPO_LAB_CLAIMS", None)
    if figures:  # the kernel's own inline backend, so figures are saved in the notebook (Agg draws nothing)
        env.pop("MPLBACKEND")
    if all_claims:  # a failed claim is reported and the notebook goes on (dpo_lab.claims.claim_mode)
        env["DPO_LAB_CLAIMS"] = "report"
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3", coalesce_streams=True,
                                     resources={"metadata": {"path": str(path.resolve().parent)}})
    start = time.perf_counter()
    try:
        client.execute(env=env)
        error = None
    except nbclient.exceptions.CellExecutionError as err:  # in the tiny profile a claim that fails stops the notebook
        error = str(err).strip().splitlines()[-1][:300]
    return nb, error, time.perf_counter() - start


def headline_result(path: Path, seed: int, all_claims: bool = False, keep: Path | None = None) -> dict:
    """Run ``path`` at ``seed``; its headline claim's row (value, interval, holds), the run's time and
    (``all_claims``: the run goes on past a failed claim) every claim that failed, with its value."""
    nb, error, seconds = execute(path, seed, all_claims=all_claims)
    if keep is not None:  # the executed notebook, to read every number of the run
        import nbformat

        keep.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, keep / f"{path.stem}.seed{seed}.ipynb")
    name = headline(nb)
    rows = recorded_claims(nb) or []
    row = next((r for r in rows if r["claim"] == name), None)
    return {"notebook": path.stem, "seed": seed, "headline": name, "seconds": round(seconds, 1),
            "value": row and row["value"], "lower": row and row["lower"], "upper": row and row["upper"],
            "holds": bool(row and row["holds"] and error is None), "error": error,
            # each with its value and interval, as the claims table prints it, to read why it failed
            "failed_claims": [describe(r) for r in rows if not r["holds"]]}


def _seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated integers such as 1,2; got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=_seed_list, default=[1, 2], help="comma-separated, e.g. 1,2 (default)")
    parser.add_argument("notebooks", nargs="*", help="notebook numbers such as 02 05 (default: all)")
    parser.add_argument("--all-claims", action="store_true",
                        help="go on past a failed claim and list every claim that fails (DPO_LAB_CLAIMS=report)")
    parser.add_argument("--keep", type=Path, default=None, help="a folder to write each executed notebook to")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "seeds.json")
    args = parser.parse_args(argv)
    chosen = [p for p in notebooks() if not args.notebooks or p.name[:2] in args.notebooks]
    if not chosen:
        parser.error(f"no notebook numbered {' '.join(args.notebooks)} in {REPO / 'notebooks'}")
    rows = []
    for path in chosen:
        for seed in args.seeds:
            row = headline_result(path, seed, all_claims=args.all_claims, keep=args.keep)
            rows.append(row)
            interval = f" [{row['lower']:.4g}, {row['upper']:.4g}]" if row["lower"] is not None else ""
            value = f"{row['value']:.4g}" if isinstance(row["value"], float) else str(row["value"])
            verdict = "holds" if row["holds"] else f"DOES NOT HOLD ({row['error'] or 'claim false'})"
            print(f"{row['notebook']} seed {seed}: {row['headline']}: {value}{interval} {verdict} "
                  f"({row['seconds']:.0f} s)", flush=True)
            for failed in row["failed_claims"] if args.all_claims else []:
                print(f"    fails: {failed}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["holds"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
