"""``DPO_LAB_SEED`` reruns a notebook on another seed: the set-up seeds with it and pick_config puts it in the
config's ``seed``, which every training run, sampler and shuffle of the notebook reads (issue #21)."""

import pytest
import torch

from dpo_lab.env import get_seed, pick_config, setup_notebook

CONFIGS = {"tiny": {"seed": 0, "n_steps": 10}, "full": {"seed": 0, "n_steps": 1000}}


def test_unset_keeps_the_notebooks_seed(monkeypatch):
    monkeypatch.delenv("DPO_LAB_SEED", raising=False)
    assert get_seed() == 0 and get_seed(7) == 7
    assert pick_config(CONFIGS, "tiny") == {"seed": 0, "n_steps": 10}


def test_set_overrides_the_config_and_the_setup(monkeypatch, capsys):
    monkeypatch.setenv("DPO_LAB_SEED", "1")
    monkeypatch.setenv("DPO_LAB_PROFILE", "tiny")
    assert pick_config(CONFIGS, "tiny") == {"seed": 1, "n_steps": 10}
    assert pick_config({"tiny": {"n_steps": 10}}, "tiny") == {"n_steps": 10}  # no seed key: nothing added
    threads = torch.get_num_threads()
    try:
        info = setup_notebook(quiet=True)
        drawn = torch.rand(3)
        monkeypatch.setenv("DPO_LAB_SEED", "2")
        setup_notebook(quiet=True)
        other = torch.rand(3)
        assert info["seed"] == 1 and not torch.equal(drawn, other)
        monkeypatch.setenv("DPO_LAB_SEED", "1")
        setup_notebook(quiet=True)
        assert torch.equal(torch.rand(3), drawn)  # the same seed repeats
        assert setup_notebook(seed=5, quiet=True)["seed"] == 5  # an explicit seed wins
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("bad", ["-1", "one", "1.5"])
def test_a_bad_seed_is_a_clear_error(monkeypatch, bad):
    monkeypatch.setenv("DPO_LAB_SEED", bad)
    with pytest.raises(ValueError, match="DPO_LAB_SEED"):
        get_seed()


def test_the_seeds_command_reads_its_arguments(monkeypatch, capsys):
    from dpo_lab import seeds

    ran = []
    monkeypatch.setattr(seeds, "headline_result", lambda path, seed, all_claims=False, keep=None: ran.append(
        (path.name[:2], seed, all_claims)) or {
        "notebook": path.stem, "seed": seed, "headline": "h", "seconds": 1.0, "value": 1.0, "lower": None,
        "upper": None, "holds": True, "error": None, "failed_claims": ["another claim"] if all_claims else []})
    assert seeds.main(["--seeds", "1,2", "00", "01", "--out", "/dev/null"]) == 0
    assert ran == [("00", 1, False), ("00", 2, False), ("01", 1, False), ("01", 2, False)]
    ran.clear()
    assert seeds.main(["--all-claims", "--seeds", "1", "00", "--out", "/dev/null"]) == 0  # the headline held
    assert ran == [("00", 1, True)]
    assert "fails: another claim" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        seeds.main(["--seeds", "one", "00"])
