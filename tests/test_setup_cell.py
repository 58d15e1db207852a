"""The set-up cell: the same in every notebook, set-up only, in step with the Colab badges, and it
works where a learner runs it (clones, installs, or stops with a message saying what to do)."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from installs import ROOT, clean_env, declared, make_venv, snapshot

from dpo_lab import fork

NOTEBOOKS = fork.notebooks(ROOT)
SETUP = fork.setup_cell(nbformat.read(NOTEBOOKS[0], as_version=4))


def code_cells(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_every_notebook_opens_with_the_same_setup_cell_and_ends_with_its_run_time():
    assert len(NOTEBOOKS) >= 10
    for path in NOTEBOOKS:
        cells = code_cells(path)
        assert cells[0] == SETUP, f"{path.name}: first code cell differs from {NOTEBOOKS[0].name}'s"
        assert all("setup_notebook(" not in c for c in cells[1:]), f"{path.name}: set-up outside the first cell"
        assert "report_run()" in cells[-1], f"{path.name}: the last cell must call report_run()"
    assert SETUP.count("https://github.com/") == 1 and SETUP.count('"DPO_LAB_REF", "') == 1  # URL and ref once
    assert "torch==" in SETUP and '[course]"' in SETUP  # keeps the installed torch; installs the course extra


def test_setup_cells_and_colab_badges_agree():
    assert fork.check(ROOT) == []


def test_fork_rewrites_cells_and_badges_and_check_catches_a_stray_badge(tmp_path):
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    before = {p.name: nbformat.read(p, as_version=4) for p in fork.notebooks(tmp_path)}
    changed = fork.rewrite(tmp_path, "my-class/dpo-lab-2027", "spring")
    assert len(changed) == len(NOTEBOOKS) + 1
    assert fork.check(tmp_path) == []
    readme = (tmp_path / "README.md").read_text()
    assert "dpo-lab/dpo-lab" not in readme
    assert readme.count("colab.research.google.com/github/my-class/dpo-lab-2027/blob/spring/notebooks/") >= 10
    assert "git+https://github.com/my-class/dpo-lab-2027@spring" in readme
    for path in fork.notebooks(tmp_path):
        nb = nbformat.read(path, as_version=4)
        assert fork.cell_target(fork.setup_cell(nb)) == ("https://github.com/my-class/dpo-lab-2027", "spring")
        old = before[path.name]
        assert [c.get("outputs") for c in nb.cells] == [c.get("outputs") for c in old.cells]  # outputs kept
    # a badge pointing elsewhere is caught
    (tmp_path / "README.md").write_text(readme.replace("my-class/dpo-lab-2027/blob/spring/notebooks/02_",
                                                       "dpo-lab/dpo-lab/blob/main/notebooks/02_"))
    assert any("02_" in p and "dpo-lab/dpo-lab@main" in p for p in fork.check(tmp_path))
    with pytest.raises(ValueError):
        fork.rewrite(tmp_path, "not a repo")


def run_setup(python: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    probe = "\nimport dpo_lab, json\nprint('PROBE', json.dumps({'file': dpo_lab.__file__, 'cwd': os.getcwd()}))\n"
    return subprocess.run([python, "-c", SETUP + probe], cwd=cwd, capture_output=True, text=True,
                          env=clean_env(**env), timeout=300)


def test_setup_cell_stops_with_a_message_when_the_clone_fails(tmp_path):
    done = run_setup(sys.executable, tmp_path, DPO_LAB_REPO=(tmp_path / "no-such-repo.git").as_uri(),
                     DPO_LAB_REF="main")
    assert done.returncode != 0
    assert "Set-up failed while cloning" in done.stderr and "What to do:" in done.stderr
    assert "no-such-repo.git" in done.stderr and "DPO_LAB_REPO" in done.stderr
    assert not (tmp_path / "dpo-lab").exists()


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env=clean_env(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                                        GIT_COMMITTER_EMAIL="t@t")).stdout.strip()


def ci_install() -> str:
    """Where the environment running the tests has dpo_lab installed (and how), to check it is left alone."""
    code = ("import importlib.metadata as m\ntry:\n d = m.distribution('dpo_lab')\n"
            " print(d.locate_file(''), d.read_text('direct_url.json'))\nexcept m.PackageNotFoundError:\n print('none')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env()).stdout


def test_setup_cell_clones_the_ref_and_installs_into_a_throwaway_environment(tmp_path):
    start = time.perf_counter()
    # the stand-in remote: a bare repository holding this checkout's files on branch `lesson`, and a
    # different commit on main, so that cloning the wrong ref is visible
    work = snapshot(tmp_path / "work")
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "course", cwd=work)
    git("checkout", "-q", "-b", "lesson", cwd=work)
    (work / "LESSON").write_text("the requested ref\n")
    git("add", "LESSON", cwd=work)
    git("commit", "-q", "-m", "lesson", cwd=work)
    lesson = git("rev-parse", "HEAD", cwd=work)
    git("clone", "-q", "--bare", str(work), str(tmp_path / "remote.git"), cwd=tmp_path)

    python = make_venv(tmp_path / "venv", declared("core", "course"), extra_dists=("pip", "setuptools"))
    learner = tmp_path / "colab"
    learner.mkdir()
    before = ci_install()
    done = run_setup(str(python), learner, DPO_LAB_REPO=(tmp_path / "remote.git").as_uri(), DPO_LAB_REF="lesson",
                     # offline: pip must find every course requirement already installed, and build with them
                     PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0", OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stderr[-3000:]
    clone = learner / "dpo-lab"
    assert git("rev-parse", "HEAD", cwd=clone) == lesson and (clone / "LESSON").exists()
    probe = json.loads(done.stdout.split("PROBE ", 1)[1])
    assert probe["file"] == str(clone / "dpo_lab" / "__init__.py")
    assert probe["cwd"] == str(clone / "notebooks")
    assert "profile: tiny | device: cpu" in done.stdout
    # installed, editable, into the throwaway environment: a fresh process elsewhere imports the clone
    fresh = subprocess.run([str(python), "-c", "import dpo_lab, dpo_lab.paths; print(dpo_lab.__file__);"
                            "print(dpo_lab.paths.data_dir())"], cwd=tmp_path, capture_output=True, text=True,
                           env=clean_env(), check=True).stdout.split()
    assert fresh == [str(clone / "dpo_lab" / "__init__.py"), str(clone / "data")]
    assert ci_install() == before  # the CI environment's own install is untouched
    # run again from the notebook's folder (a learner re-running the cell): uses the checkout, installs nothing
    again = run_setup(str(python), clone / "notebooks", DPO_LAB_REPO="file:///nowhere", PIP_NO_INDEX="1")
    assert again.returncode == 0, again.stderr[-2000:]
    print(f"set-up cell test: {time.perf_counter() - start:.1f} s")
