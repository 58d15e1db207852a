"""The one progress bar: text, and saved finished in an executed notebook (never a widget's "0%")."""

import nbformat

from dpo_lab.progress import progress
from dpo_lab.seeds import execute


def test_disabled_returns_the_iterable_itself():
    items = [1, 2, 3]
    assert progress(items, "x", enabled=False) is items
    assert list(progress(items, "x")) == items


def test_an_executed_notebook_keeps_the_finished_bar(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import time\nfrom dpo_lab.progress import progress\n"
        "for _ in progress(range(3), 'steps'):\n    time.sleep(0.6)\n")]
    path = tmp_path / "99_bar.ipynb"
    nbformat.write(nb, path)
    ran, error, _ = execute(path, seed=0)
    assert error is None
    text = "".join(o.get("text", "") for o in ran.cells[0].outputs)
    assert "steps: 100%" in text and "3/3" in text
    assert " 0%" not in text and "\r" not in text  # only the last frame is kept


def test_every_loop_uses_the_one_bar():
    # a widget bar (tqdm.auto) would be saved as "0%": only dpo_lab.progress may import tqdm
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sources = {p: p.read_text(encoding="utf-8") for p in (root / "dpo_lab").rglob("*.py") if p.name != "progress.py"}
    offenders = [str(p.relative_to(root)) for p, text in sources.items()
                 if "from tqdm" in text or "import tqdm" in text]
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        if "from tqdm" in code or "import tqdm" in code:
            offenders.append(str(path.relative_to(root)))
    assert offenders == [], f"use dpo_lab.progress.progress instead of tqdm in {offenders}"


def test_no_committed_notebook_shows_a_bar_that_never_started():
    # a widget bar is saved as its first frame ("  0%|"): every committed output must show finished bars or none
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    unstarted = re.compile(r"(?<![0-9])0%\|")
    found = []
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            for output in cell.get("outputs", []):
                text = output.get("text", "") + "".join(output.get("data", {}).get("text/plain", ""))
                if unstarted.search(text):
                    found.append(f"{path.name} cell {i}")
    assert found == [], f"re-execute with python -m dpo_lab.syllabus --run NN: {found}"
