"""Repository-level checks: shipped data rebuilds bit for bit and is found through the package; profile and
device. (The dependency files are checked in test_dependencies.py.)"""

from pathlib import Path

import pytest

from dpo_lab.env import pick_config

ROOT = Path(__file__).resolve().parent.parent
def test_shipped_tokenizer_rebuilds_bit_for_bit(tmp_path):
    from dpo_lab.tokenizer import TOKENIZER_DIR, _same_dirs, save_course_tokenizer

    save_course_tokenizer(tmp_path)
    assert _same_dirs(TOKENIZER_DIR, tmp_path) == []


def test_tokenizer_loads_with_autotokenizer():
    from transformers import AutoTokenizer

    from dpo_lab.tokenizer import TOKENIZER_DIR

    tok = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
    text = "Review: The film was wonderful. def f(x): return x + 1"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"


def test_profile_and_config(monkeypatch):
    from dpo_lab.env import get_profile

    monkeypatch.setenv("DPO_LAB_PROFILE", "full")
    assert get_profile() == "full"
    assert pick_config({"tiny": {"n": 1}, "full": {"n": 2}}) == {"n": 2}
    monkeypatch.setenv("DPO_LAB_PROFILE", "huge")
    with pytest.raises(ValueError, match="huge"):
        get_profile()
    monkeypatch.setenv("DPO_LAB_PROFILE", "tiny")
    with pytest.raises(KeyError, match="tiny"):
        pick_config({"full": {}})


def test_every_notebook_is_in_the_syllabus():
    readme = (ROOT / "README.md").read_text()
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert nb.name in readme, f"README's syllabus does not list {nb.name}"


def test_shipped_files_are_found_through_the_package_in_the_checkouts_data_folder():
    from dpo_lab import paths
    from dpo_lab.data import SAMPLE_PATH
    from dpo_lab.tasks import code, moderation, sentiment, summarization
    from dpo_lab.tokenizer import TOKENIZER_DIR

    assert paths.data_dir() == ROOT / "data"  # a checkout: one copy, the learners' data/
    assert TOKENIZER_DIR == ROOT / "data" / "tokenizer"
    for path in (SAMPLE_PATH, code.DATA_PATH, moderation.DATA_PATH, sentiment.DATA_PATH, summarization.DATA_PATH):
        assert path.parent == ROOT / "data" and path.is_file(), path
    assert not (ROOT / "dpo_lab" / paths.PACKAGED).exists()  # no second copy inside the package folder


def test_tiny_profile_uses_the_cpu_unless_dpo_lab_device_says_otherwise(monkeypatch):
    import torch

    from dpo_lab.env import get_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine: tiny still takes the CPU
    monkeypatch.setenv("DPO_LAB_PROFILE", "tiny")
    monkeypatch.delenv("DPO_LAB_DEVICE", raising=False)
    assert get_device() == torch.device("cpu")
    monkeypatch.setenv("DPO_LAB_PROFILE", "full")
    assert get_device() == torch.device("cuda")
    monkeypatch.setenv("DPO_LAB_PROFILE", "tiny")
    monkeypatch.setenv("DPO_LAB_DEVICE", "cuda")
    assert get_device() == torch.device("cuda")
    monkeypatch.setenv("DPO_LAB_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for wrong, message in (("cuda", "no CUDA GPU"), ("tpu9", "not a device")):
        monkeypatch.setenv("DPO_LAB_DEVICE", wrong)
        with pytest.raises(ValueError, match=message):
            get_device()
    if not torch.backends.mps.is_available():
        monkeypatch.setenv("DPO_LAB_DEVICE", "mps")
        with pytest.raises(ValueError, match="MPS"):
            get_device()


def test_setup_prints_the_device_choice_and_report_run_prints_a_parseable_line(capsys, monkeypatch):
    import json

    import torch

    from dpo_lab.env import RUN_MARKER, report_run, setup_notebook

    monkeypatch.setenv("DPO_LAB_PROFILE", "tiny")
    monkeypatch.delenv("DPO_LAB_DEVICE", raising=False)
    threads = torch.get_num_threads()
    try:
        setup_notebook(seed=0)
        record = report_run()
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "device: cpu (the tiny profile's default" in out
    line = next(line for line in out.splitlines() if line.startswith(RUN_MARKER))
    assert json.loads(line[len(RUN_MARKER):]) == record
    assert record["profile"] == "tiny" and record["device"] == "cpu" and 0 <= record["seconds"] < 60


def test_the_package_docstring_lists_every_public_module():
    import dpo_lab

    modules = sorted(p.stem for p in Path(dpo_lab.__file__).parent.glob("*.py") if not p.stem.startswith("_"))
    missing = [m for m in modules if f"``{m}``" not in dpo_lab.__doc__]
    assert missing == [], f"dpo_lab/__init__.py does not list {missing}"
