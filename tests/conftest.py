import os

import pytest

os.environ.setdefault("DPO_LAB_PROFILE", "tiny")


@pytest.fixture(scope="session")
def tokenizer():
    from dpo_lab.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture()
def tiny_model(tokenizer):
    from dpo_lab.models import tiny_gpt2

    return tiny_gpt2(tokenizer, seed=0, n_layer=2, n_embd=32, n_head=2).eval()
