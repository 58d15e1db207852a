"""The README's syllabus table is what the notebooks measured (dpo_lab.syllabus), on fixtures and for real."""

import json
import shutil

import nbformat
from installs import ROOT

from dpo_lab import syllabus
from dpo_lab.env import RUN_MARKER

SETUP = next(c.source for c in nbformat.read(ROOT / "notebooks" / "00_environment_check.ipynb", 4).cells
             if c.cell_type == "code")


def run_line(**record) -> str:
    base = {"date": "2026-11-29", "device": "cpu", "hardware": "2 CPU cores, 1 thread(s)", "peak_gpu_mib": None,
            "platform": "linux", "profile": "tiny", "scale": None, "seconds": 95.0, "torch": "2.13.0"}
    return f"{RUN_MARKER} {json.dumps({**base, **record}, sort_keys=True)}\n"


def notebook(path, title, *outputs, metadata=None):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\ntext"), nbformat.v4.new_code_cell(SETUP),
                nbformat.v4.new_code_cell("report_run()")]
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", name="stdout", text=text) for text in outputs]
    if metadata:
        nb.metadata["dpo_lab"] = metadata
    nbformat.write(nb, path)


def fixture_repo(tmp_path):
    (tmp_path / "notebooks").mkdir()
    notebook(tmp_path / "notebooks" / "00_first.ipynb", "First", "other output\n" + run_line(seconds=42.4))
    full = run_line(profile="full", device="cuda", hardware="Tesla T4", peak_gpu_mib=9830, seconds=1500.0,
                    date="2026-12-01")
    notebook(tmp_path / "notebooks" / "01_second.ipynb", "Second", full,
             metadata={"runs": {"tiny": json.loads(run_line(seconds=200.0)[len(RUN_MARKER):])}})
    notebook(tmp_path / "notebooks" / "02_third.ipynb", "Third: new", run_line(profile="full", scale="smoke"))
    (tmp_path / "README.md").write_text(
        "# Course\n\n<!-- syllabus:start -->\n| # | Notebook | What you learn | Status |\n|---|---|---|---|\n"
        "| 00 | [00_first.ipynb](notebooks/00_first.ipynb) | the first lesson | ready |\n"
        "| 01 | [01_second.ipynb](notebooks/01_second.ipynb) | the second lesson | ready |\n"
        "<!-- syllabus:end -->\n\nMore text.\n")
    return tmp_path


def test_table_from_fixture_notebooks(tmp_path):
    root = fixture_repo(tmp_path)
    assert syllabus.check(root) != []  # the README's old table does not match
    assert syllabus.write(root)
    assert syllabus.check(root) == []
    readme = (root / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| 0")]
    assert len(rows) == 3 and readme.endswith("<!-- syllabus:end -->\n\nMore text.\n")
    assert "| the first lesson | 42 s (2 CPU cores, 1 thread(s); 2026-11-29) | not yet run |" in rows[0]
    assert ("| the second lesson | 3.3 min (2 CPU cores, 1 thread(s); 2026-11-29) | run on Tesla T4: 25.0 min, "
            "peak GPU memory 9.6 GiB (2026-12-01) |") in rows[1]
    assert "| Third: new | not yet measured | not yet run |" in rows[2]  # a smoke-scale run does not count
    assert "colab.research.google.com/github/dpo-lab/dpo-lab/blob/main/notebooks/01_second.ipynb" in rows[1]
    # the full run was kept in the metadata next to the tiny one
    kept = nbformat.read(root / "notebooks" / "01_second.ipynb", 4).metadata["dpo_lab"]["runs"]
    assert set(kept) == {"tiny", "full"} and kept["full"]["seconds"] == 1500.0
    # a README edited by hand, or a notebook rerun, makes the check fail
    (root / "README.md").write_text(readme.replace("42 s", "2 min"))
    assert any("00_first" in p for p in syllabus.check(root))
    (root / "README.md").write_text(readme)
    nb = nbformat.read(root / "notebooks" / "00_first.ipynb", 4)
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", name="stdout", text=run_line(seconds=61.0))]
    nbformat.write(nb, root / "notebooks" / "00_first.ipynb")
    assert any("00_first" in p for p in syllabus.check(root))


def test_the_committed_readme_matches_the_committed_notebooks(tmp_path):
    assert syllabus.check(ROOT) == []
    # and writing changes nothing (the metadata already holds every run the outputs show)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "data" / "t4_estimates.json", tmp_path / "data")  # the full-profile column's estimates
    assert syllabus.keep_runs(tmp_path) == [] and not syllabus.write(tmp_path)


def test_readme_no_longer_claims_a_time_nobody_measured():
    readme = (ROOT / "README.md").read_text()
    assert "about 2 minutes a notebook" not in readme
