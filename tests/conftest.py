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
