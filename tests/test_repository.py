"""Repository-level checks: the two environment files agree, shipped data rebuilds bit for bit."""

import re
from pathlib import Path

import pytest

from dpo_lab.env import MAX_EXCLUSIVE, MIN_VERSIONS, check_environment, pick_config

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def parse_spec(line: str) -> tuple[str, str]:
    match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", line.strip())
    return match.group(1).lower(), match.group(2).replace(" ", "")


def requirements() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, spec = parse_spec(line)
            out[name] = spec
    return out


def conda_environment() -> dict[str, str]:
    out, section, in_pip = {}, None, False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        stripped = line.split("#")[0].strip()
        if stripped.endswith(":") and not stripped.startswith("-"):
            section = stripped[:-1]  # channels: / dependencies:
            continue
        if stripped.startswith("- pip:"):
            in_pip = True
            continue
        if not stripped.startswith("- ") or in_pip or section != "dependencies":
            continue
        name, spec = parse_spec(stripped[2:])
        if name in ("python", "pip"):
            continue
        out[CONDA_NAMES.get(name, name)] = spec
    return out


def test_conda_and_pip_name_the_same_packages_and_bounds():
    assert requirements() == conda_environment()


def test_requirements_install_the_package_editable():
    assert "-e ." in (ROOT / "requirements.txt").read_text().splitlines()


def test_environment_check_knows_the_same_bounds():
    reqs = requirements()
    for pkg, low in MIN_VERSIONS.items():
        expected = f">={low}" + (f",<{MAX_EXCLUSIVE[pkg]}" if pkg in MAX_EXCLUSIVE else "")
        assert reqs[pkg] == expected, pkg
    rows = {r["package"]: r for r in check_environment()}
    assert rows["torch"]["status"] == "ok"  # this very environment passes its own check


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
