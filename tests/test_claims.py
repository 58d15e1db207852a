"""claim(): one helper for every claim a notebook makes about its results."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dpo_lab import claims as claims_mod
from dpo_lab.claims import ClaimFailed, claim, claim_mode, claims_table, reset_claims

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

# How many claim() calls each notebook's code makes (static count of the source). A change
# here is a change to what the course claims: update it on purpose, with the text.
CLAIMS_PER_NOTEBOOK = {
    "00_environment_check": 1,
    "01_deriving_dpo": 29,
    "02_dpo_gpt2_sentiment": 9,
    "03_reward_model_baseline": 10,
    "04_code_dpo": 13,
    "05_summarization_dpo": 22,
    "06_diffusion_dpo": 26,
    "07_efficiency_lora": 4,
    "08_variants_and_failure_modes": 35,
    "09_content_moderation": 8,
}


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    reset_claims()
    monkeypatch.delenv("DPO_LAB_SCALE", raising=False)
    monkeypatch.delenv("DPO_LAB_CLAIMS", raising=False)
    monkeypatch.setenv("DPO_LAB_PROFILE", "tiny")
    yield
    reset_claims()


def _code(path: Path) -> str:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def test_every_notebook_makes_its_pinned_number_of_claims():
    found = {p.stem: len(re.findall(r"\bclaim\(", _code(p))) for p in sorted(NOTEBOOKS.glob("*.ipynb"))}
    assert found == CLAIMS_PER_NOTEBOOK


def test_every_notebook_prints_its_claims_table_last():
    import nbformat

    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        last = [c for c in nb.cells if c.cell_type == "code"][-1]
        assert "report_claims()" in last.source, path.name
        assert "from dpo_lab.claims import claim" in _code(path), path.name


def test_tiny_profile_raises_on_a_failed_claim_with_its_numbers():
    assert claim_mode() == "raise"
    assert claim("holds", 0.7, ">=", 0.65) is True
    with pytest.raises(ClaimFailed, match=r"win rate: 0\.6 >= 0\.65, margin -0\.05"):
        claim("win rate", 0.6, ">=", 0.65)
    with pytest.raises(AssertionError):  # ClaimFailed is an AssertionError, as the old asserts were
        claim("monotone", (torch.diff(torch.tensor([3.0, 2.0, 2.5])) < 0).all())


def test_full_profile_reports_and_goes_on(monkeypatch, capsys):
    monkeypatch.setenv("DPO_LAB_PROFILE", "full")
    assert claim_mode() == "report"
    assert claim("DPO beats SFT", 0.41, ">", 0.5) is False
    out = capsys.readouterr().out
    assert "does not hold" in out and "0.41 > 0.5" in out and "margin -0.09" in out


def test_smoke_scale_only_records(monkeypatch, capsys):
    monkeypatch.setenv("DPO_LAB_PROFILE", "full")
    monkeypatch.setenv("DPO_LAB_SCALE", "smoke")
    assert claim_mode() == "record"
    assert claim("DPO beats SFT", 0.41, ">", 0.5) is False
    assert capsys.readouterr().out == ""
    assert claims_table().holds.tolist() == [False]


def test_claims_override_goes_on_past_a_failed_claim(monkeypatch, capsys):
    # python -m dpo_lab.seeds --all-claims: a tiny run lists every claim that fails, not only the first
    monkeypatch.setenv("DPO_LAB_CLAIMS", "report")
    assert claim_mode() == "report"
    assert claim("DPO beats SFT", 0.41, ">", 0.5) is False
    assert "does not hold" in capsys.readouterr().out
    monkeypatch.setenv("DPO_LAB_CLAIMS", "maybe")
    with pytest.raises(ValueError, match="DPO_LAB_CLAIMS='maybe'"):
        claim_mode()


def test_margins_values_and_intervals_are_recorded():
    claim("above", np.float64(0.8), ">", 0.5)
    claim("below", torch.tensor(0.1), "<", 0.25)
    claim("yes/no", np.bool_(True))
    claim("on an interval", 0.7, ">", 0.5, interval=(0.6, 0.8))
    table = claims_table().set_index("claim")
    assert table.loc["above", "margin"] == pytest.approx(0.3)
    assert table.loc["below", "margin"] == pytest.approx(0.15)
    assert table.loc["below", "value"] == pytest.approx(0.1)
    assert table.loc["yes/no", "holds"] and np.isnan(table.loc["yes/no", "margin"])  # a yes/no claim has no margin
    # with an interval the conservative end is compared: the lower bound for ">"
    assert table.loc["on an interval", "margin"] == pytest.approx(0.1)
    assert (table.loc["on an interval", "lower"], table.loc["on an interval", "upper"]) == (0.6, 0.8)
    # the value clears the threshold but its interval does not: the claim fails
    with pytest.raises(ClaimFailed, match=r"\[0\.45, 0\.8\]"):
        claim("interval straddles", 0.7, ">", 0.5, interval=(0.45, 0.8))
    with pytest.raises(ClaimFailed):
        claim("upper bound for <", 0.2, "<", 0.25, interval=(0.1, 0.3))


def test_rerunning_a_cell_replaces_its_claim():
    claim("same name", 1.0, ">", 0.0)
    claim("same name", 2.0, ">", 0.0)
    assert claims_table().value.tolist() == [2.0]


def test_bad_calls_are_clear_errors():
    with pytest.raises(ValueError, match="op"):
        claim("x", 1.0, "=>", 0.0)
    with pytest.raises(TypeError, match="reduce it first"):
        claim("x", torch.tensor([1.0, 2.0]), ">", 0.0)
    with pytest.raises(ValueError, match="lower > upper"):
        claim("x", 1.0, ">", 0.0, interval=(2.0, 1.0))
    with pytest.raises(ValueError, match="needs an op"):
        claim("x", True, threshold=1.0)


def test_save_results_stores_the_claims(tmp_path, monkeypatch):
    from dpo_lab.results import save_results

    monkeypatch.setenv("DPO_LAB_RESULTS", str(tmp_path))
    claim("gain", 0.3, ">", 0.1)
    path = save_results("99_test", {"x": 1})
    saved = json.loads(path.read_text())
    assert saved["x"] == 1
    assert saved["claims"][0]["claim"] == "gain" and saved["claims"][0]["margin"] == pytest.approx(0.2)


def test_report_claims_prints_the_table(capsys):
    claim("gain", 0.3, ">", 0.1)
    claims_mod.report_claims()
    out = capsys.readouterr().out
    assert "1 of 1 claims hold" in out and "gain: 0.3 > 0.1" in out


# Notebooks whose inequality claims do not all carry an interval yet (issue #21, in progress):
# their recorded claims are still checked for consistency, but not required to have intervals.
# Shrink this set as notebooks are converted; never add to it.
INTERVALS_PENDING: set[str] = set()


def _recorded_claims(path: Path) -> list[dict] | None:
    import nbformat

    from dpo_lab.seeds import recorded_claims

    return recorded_claims(nbformat.read(path, as_version=4))


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem[:2])
def test_recorded_claims_hold_on_their_intervals(path):
    rows = _recorded_claims(path)
    assert rows is not None, f"{path.name}: no recorded claims in its last cell's output; re-execute it"
    assert len(rows) >= CLAIMS_PER_NOTEBOOK[path.stem]  # a claim() in a loop records several rows
    assert claims_mod.recorded_problems(rows, require_intervals=path.stem not in INTERVALS_PENDING) == []


def test_recorded_problems_finds_each_kind_of_problem():
    base = {"op": ">", "threshold": 0.5, "note": "", "holds": True, "value": 0.7, "margin": None}
    rows = [
        {**base, "claim": "ok", "lower": 0.6, "upper": 0.8},
        {**base, "claim": "no interval", "lower": None, "upper": None},
        {**base, "claim": "exact", "lower": None, "upper": None, "note": "deterministic: a count"},
        {**base, "claim": "does not clear", "lower": 0.4, "upper": 0.8},
        {**base, "claim": "failed", "lower": 0.6, "upper": 0.8, "holds": False},
        {**base, "claim": "yes/no", "op": "", "threshold": None, "lower": None, "upper": None},
    ]
    found = claims_mod.recorded_problems(rows)
    assert [p.split("'")[1] for p in found] == ["no interval", "does not clear", "failed"]
    assert [p.split("'")[1] for p in claims_mod.recorded_problems(rows, require_intervals=False)] == [
        "does not clear", "failed"]


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem[:2])
def test_every_notebook_names_a_headline_claim_it_makes(path):
    import nbformat

    from dpo_lab.seeds import headline

    name = headline(nbformat.read(path, as_version=4))
    assert name in [row["claim"] for row in _recorded_claims(path) or []], f"{path.name}: headline {name!r}"


def test_a_tie_holds_when_the_interval_of_the_difference_contains_zero():
    assert claim("A and B tie", 0.01, "ties", 0, interval=(-0.02, 0.04))
    with pytest.raises(ClaimFailed):
        claim("A and C tie", 0.05, "ties", 0, interval=(0.01, 0.09))
    with pytest.raises(ValueError, match="needs the interval"):
        claim("no interval", 0.01, "ties", 0)
    table = claims_table().set_index("claim")
    assert table.loc["A and B tie", "margin"] == pytest.approx(0.02)
    rows = claims_mod.claims_records()
    assert [p.split("'")[1] for p in claims_mod.recorded_problems(rows)] == ["A and C tie", "A and C tie"]
