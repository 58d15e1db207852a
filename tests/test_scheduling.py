"""``pytest -n 2`` keeps each file (each notebook) whole on one worker, and shares the smoke runs.

Run for real in a temporary project: a file whose tests depend on each other's state (as a
notebook's cells do) must see every one of its tests in one process, in order; the separate
smoke runs must reach both workers. This failed when pytest 9.2 stopped honouring the
``xdist_group`` renaming the grouping relied on (every notebook cell after the first few then
raised ``NameError`` in CI).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _root_conftest():
    """The repository's root conftest.py (``import conftest`` would find tests/conftest.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("root_conftest", REPO / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# a "notebook": module state that each test needs from the one before it, as cells share a kernel
STATE_FILE = '''
STATE = []
{tests}
'''


def test_split_scope_keeps_files_whole_and_smoke_runs_apart():
    split_scope = _root_conftest().split_scope
    assert split_scope("notebooks/03_x.ipynb::Cell 4") == "notebooks/03_x.ipynb"
    assert split_scope("tests/test_a.py::test_b[1]") == "tests/test_a.py"
    smoke = "tests/test_full_smoke.py::test_notebook_runs_in_the_full_profile_at_smoke_scale[05]"
    assert split_scope(smoke) == smoke
    assert split_scope("tests/test_full_smoke.py::test_standin_hub_resolves") == "tests/test_full_smoke.py"


def test_two_workers_run_each_file_whole_and_in_order(tmp_path):
    shutil.copy(REPO / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "tests").mkdir()
    for name in ("a", "b", "c"):  # cells of a "notebook": each needs the one before, in this process
        tests = "\n".join(f"def test_{i}():\n    assert STATE == list(range({i}))\n    STATE.append({i})\n"
                          for i in range(8))
        (tmp_path / "tests" / f"test_{name}.py").write_text(STATE_FILE.format(tests=tests))
    (tmp_path / "tests" / "test_full_smoke.py").write_text(
        "import os, pytest\n"
        "@pytest.mark.parametrize('n', range(6))\n"
        "def test_notebook_runs_in_the_full_profile_at_smoke_scale(n):\n"
        "    import time; time.sleep(0.2)\n"
        "    open(f'worker-{n}', 'w').write(os.environ['PYTEST_XDIST_WORKER'])\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadfile",
                           "-p", "no:cacheprovider", "tests"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "30 passed" in done.stdout
    workers = {(tmp_path / f"worker-{n}").read_text() for n in range(6)}
    assert workers == {"gw0", "gw1"}  # the smoke runs were shared, not queued on one worker
