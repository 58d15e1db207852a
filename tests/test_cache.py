"""The runs/ cache: an entry is built once even when two processes ask for it at the same time."""

import multiprocessing
import time
from pathlib import Path

import pytest

from dpo_lab.cache import cached, runs_dir


def _build_slowly(folder: Path):
    # the build writes a file and takes long enough for the other process to arrive
    (folder / "log").write_text("built\n")
    with open(Path.cwd() / "builds.txt", "a") as log:
        log.write("build\n")
    time.sleep(0.5)
    (folder / "model.bin").write_text("weights")
    return "built"


def _load(folder: Path):
    return (folder / "model.bin").read_text()


def _ask(cwd: str, queue):
    import os

    os.chdir(cwd)
    queue.put(cached("demo", {"a": 1}, _build_slowly, _load)[0])


def test_two_processes_build_one_entry_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ask, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = sorted(queue.get(timeout=5) for _ in procs)
    assert results == ["built", "weights"]  # one built it, the other waited and loaded it
    assert (tmp_path / "builds.txt").read_text() == "build\n"
    entries = sorted(p.name for p in runs_dir().iterdir() if not p.name.endswith(".lock"))
    assert len(entries) == 1 and entries[0].startswith("demo-")
    assert (runs_dir() / entries[0] / "cache_key.json").exists()


def test_a_crashed_build_leaves_no_entry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def crash(folder):
        (folder / "half").write_text("x")
        raise RuntimeError("kernel died")

    with pytest.raises(RuntimeError):
        cached("demo", {"a": 2}, crash, _load)
    assert not any(p.is_dir() and not p.name.endswith(".partial") for p in runs_dir().iterdir())
    # the next call builds it afresh (and clears the partial folder first)
    result, folder, hit = cached("demo", {"a": 2}, _build_slowly, _load)
    assert (result, hit) == ("built", False)
    assert cached("demo", {"a": 2}, _build_slowly, _load)[::2] == ("weights", True)
    assert sorted(p.name for p in folder.iterdir()) == ["cache_key.json", "log", "model.bin"]


def test_code_version_follows_the_source_of_its_modules(tmp_path, monkeypatch):
    import dpo_lab.cache as cache_mod

    assert cache_mod.code_version("train") != cache_mod.code_version("models")
    assert cache_mod.code_version(*cache_mod.SFT_CODE) == cache_mod.code_version(*cache_mod.SFT_CODE)
    # a copy of two modules, one of them edited: the digest changes
    for name in ("train", "models"):
        (tmp_path / f"{name}.py").write_text((Path(cache_mod.__file__).parent / f"{name}.py").read_text())
    monkeypatch.setattr(cache_mod, "__file__", str(tmp_path / "cache.py"))
    before = cache_mod.code_version("train", "models")
    (tmp_path / "train.py").write_text((tmp_path / "train.py").read_text() + "\n# a fix\n")
    assert cache_mod.code_version("train", "models") != before
    with pytest.raises(FileNotFoundError, match="no dpo_lab module"):
        cache_mod.code_version("no_such_module")
