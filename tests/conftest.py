import os

import pytest
import torch

os.environ.setdefault("DPO_LAB_PROFILE", "tiny")
torch.set_num_threads(1)  # tiny tensors: one thread is faster (see dpo_lab.env.setup_notebook)


@pytest.fixture(scope="session")
def tokenizer():
    from dpo_lab.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture()
def tiny_model(tokenizer):
    from dpo_lab.models import tiny_gpt2

    return tiny_gpt2(tokenizer, seed=0, n_layer=2, n_embd=32, n_head=2).eval()


def pytest_configure(config):
    config.addinivalue_line("markers", "full_smoke: a notebook executed in the full profile at smoke scale "
                                       "against the stand-in Hub (tests/standin_hub.py)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Group the tests for ``pytest -n 2 --dist loadgroup`` (pyproject.toml's addopts).

    A file stays whole on one worker (a notebook's cells share one kernel; a module's fixtures
    are built once), except the full-profile smoke runs: each notebook's is independent and
    long, so each is its own group and the two workers share them.
    """
    for item in items:
        whole_file = item.get_closest_marker("full_smoke") is None
        item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0] if whole_file else item.nodeid))
