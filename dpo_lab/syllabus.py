"""The README's syllabus table, written from the notebooks' own measured runs.

Every notebook ends with :func:`dpo_lab.env.report_run`, which prints one line,
``dpo_lab run: {"profile": ..., "seconds": ..., "hardware": ..., "peak_gpu_mib": ...}``, into the
notebook's committed output. This script reads those lines and writes the table between the
``<!-- syllabus:start -->`` and ``<!-- syllabus:end -->`` markers of ``README.md``: per notebook its
tiny-profile time and where it was measured, and its full-profile status (not yet run, or on
which GPU, how long, peak GPU memory). Runs at smoke scale (``DPO_LAB_SCALE=smoke``) do not count.

Each profile's latest run is also kept in the notebook's metadata (``metadata.dpo_lab.runs``), so
committing a full-profile run's outputs does not lose the tiny-profile time, and the other way round::

    python -m dpo_lab.syllabus           # after executing notebooks: keep their runs, rewrite the table
    python -m dpo_lab.syllabus --run 04 09   # first execute those notebooks in place (tiny profile, seed 0)
    python -m dpo_lab.syllabus --check   # exit 1 when README.md and the notebooks disagree (a test runs it)

The "What you learn" column is prose: the script keeps what the README says, and takes a new
notebook's first heading until someone writes it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from dpo_lab.env import RUN_MARKER

START, END = "<!-- syllabus:start -->", "<!-- syllabus:end -->"
HEADER = ("| # | Notebook | What you learn | Tiny profile: measured run time | Full profile |\n"
          "|---|---|---|---|---|")
BADGE = "[![Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"
COLAB = "https://colab.research.google.com/github/{owner}/{repo}/blob/{ref}/notebooks/{name}"


def output_runs(nb) -> dict[str, dict]:
    """The runs a notebook's outputs report, by profile (smoke-scale runs left out)."""
    runs = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            text = output.get("text", "") if output.get("output_type") == "stream" else ""
            for line in text.splitlines():
                if line.startswith(RUN_MARKER):
                    record = json.loads(line[len(RUN_MARKER):])
                    if not record.get("scale"):
                        runs[record["profile"]] = record
    return runs


def runs(nb) -> dict[str, dict]:
    """Each profile's latest run: the outputs' where present, else the one kept in the metadata."""
    kept = dict(nb.metadata.get("dpo_lab", {}).get("runs", {}))
    kept.update(output_runs(nb))
    return kept


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def tiny_cell(run: dict | None) -> str:
    if not run:
        return "not yet measured"
    return f"{duration(run['seconds'])} ({run['hardware']}; {run['date']})"


def full_cell(run: dict | None, estimate: dict | None = None) -> str:
    """A measured full-profile run if there is one, else the T4 estimate of :mod:`dpo_lab.sizing`."""
    if not run:
        if not estimate:
            return "not yet run"
        minutes = f"~{estimate['t4_minutes']} min, " if estimate["t4_minutes"] else ""
        return (f"not yet run; T4 estimate: {minutes}{estimate['gpu_gib']:.1f} GiB GPU peak "
                f"({estimate['peak_stage']}), {estimate['host_gib']:.1f} GiB host")
    memory = f", peak GPU memory {run['peak_gpu_mib'] / 1024:.1f} GiB" if run.get("peak_gpu_mib") else ""
    return f"run on {run['hardware']}: {duration(run['seconds'])}{memory} ({run['date']})"


def readme_rows(readme: str) -> dict[str, list[str]]:
    """The syllabus rows the README has now, by notebook file name, as lists of cells."""
    rows = {}
    for line in block(readme).splitlines():
        match = re.search(r"\[([\w.-]+\.ipynb)\]", line)
        if match and line.startswith("|"):
            rows[match.group(1)] = [cell.strip() for cell in line.strip().strip("|").split("|")]
    return rows


def block(readme: str) -> str:
    if START not in readme or END not in readme:
        raise ValueError(f"README.md has no {START} ... {END} markers around the syllabus table")
    return readme[readme.index(START) + len(START):readme.index(END)]


def title(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def table(root: Path) -> str:
    """The syllabus table for the notebooks under ``root``, as README.md should hold it."""
    import nbformat

    from dpo_lab import fork

    old = readme_rows((root / "README.md").read_text(encoding="utf-8"))
    estimates_file = root / "data" / "t4_estimates.json"  # python -m dpo_lab.sizing --write
    estimates = json.loads(estimates_file.read_text()) if estimates_file.exists() else {}
    lines = [HEADER]
    for path in fork.notebooks(root):
        nb = nbformat.read(path, as_version=4)
        url, ref = fork.cell_target(fork.setup_cell(nb))
        owner, repo = fork.GITHUB.match(url).groups()
        badge = BADGE.format(url=COLAB.format(owner=owner, repo=repo, ref=ref, name=path.name))
        learn = old[path.name][2] if path.name in old and len(old[path.name]) > 2 else title(nb)
        found = runs(nb)
        lines.append(f"| {path.name[:2]} | [{path.name}](notebooks/{path.name}) {badge} | {learn} | "
                     f"{tiny_cell(found.get('tiny'))} | {full_cell(found.get('full'), estimates.get(path.name[:2]))} |")
    return "\n".join(lines)


def keep_runs(root: Path) -> list[Path]:
    """Copy each notebook's reported runs into its metadata; return the notebooks changed."""
    import nbformat

    from dpo_lab import fork

    changed = []
    for path in fork.notebooks(root):
        nb = nbformat.read(path, as_version=4)
        found = runs(nb)
        meta = nb.metadata.setdefault("dpo_lab", {})
        if found and meta.get("runs") != found:
            meta["runs"] = found
            nbformat.write(nb, path)
            changed.append(path)
    return changed


def write(root: Path) -> bool:
    """Keep the notebooks' runs and rewrite the README's table; True when README.md changed."""
    keep_runs(root)
    readme_path = root / "README.md"
    readme = readme_path.read_text(encoding="utf-8")
    new = readme.replace(block(readme), "\n" + table(root) + "\n")
    if new != readme:
        readme_path.write_text(new, encoding="utf-8")
    return new != readme


def check(root: Path) -> list[str]:
    """Lines of the README's table that differ from what the notebooks say ([] when they agree)."""
    have = block((root / "README.md").read_text(encoding="utf-8")).strip().splitlines()
    want = table(root).splitlines()
    problems = [f"README.md says:   {h}\nnotebooks say:   {w}" for h, w in zip(have, want, strict=False) if h != w]
    if len(have) != len(want):
        problems.append(f"README.md's table has {len(have)} lines, the notebooks make {len(want)}")
    return problems


def run_in_place(root: Path, number: str) -> None:
    """Execute notebook ``number`` (e.g. ``"04"``) in the tiny profile at seed 0 and save it with its outputs.

    Streams are coalesced, so a progress bar is saved as its last frame. A notebook whose run
    fails is not written (its committed outputs stay as they were) and the error names it."""
    import nbformat

    from dpo_lab.seeds import execute

    paths = sorted((root / "notebooks").glob(f"{number}_*.ipynb"))
    if len(paths) != 1:
        raise SystemExit(f"--run {number}: expected one notebook notebooks/{number}_*.ipynb, found {len(paths)}")
    nb, error, seconds = execute(paths[0], seed=0, figures=True)
    if error is not None:
        raise SystemExit(f"{paths[0].name} failed after {seconds:.0f} s and was not saved: {error}")
    nbformat.write(nb, paths[0])
    print(f"{paths[0].name}: executed in {seconds:.0f} s and saved", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write README.md's syllabus table from the notebooks' runs.")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when they disagree")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the checkout (default: the one this dpo_lab lives in)")
    parser.add_argument("--run", nargs="+", metavar="NN", default=[],
                        help="first execute these notebooks in place in the tiny profile (e.g. 04 09)")
    args = parser.parse_args(argv)
    for number in args.run:
        run_in_place(args.root, number)
    if args.check:
        problems = check(args.root)
        print("\n".join(problems) if problems else "README.md's syllabus table matches the notebooks")
        return 1 if problems else 0
    print("rewrote README.md's syllabus table" if write(args.root) else "README.md's syllabus table was up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
