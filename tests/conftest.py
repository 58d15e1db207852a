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


def _fresh_pages(mib: int) -> None:
    """Make ``mib`` MiB of new resident memory and release it at once: an anonymous mmap with one byte
    written in every page, so the pages come from the kernel whatever malloc does. (An ``np.ones``
    block may be served from heap memory an earlier test freed, which the peak-RSS counter rightly
    sees as no rise: CI saw an inner peak of 0.0 MiB that way.)"""
    import mmap

    block = mmap.mmap(-1, mib * 2**20)
    for offset in range(0, mib * 2**20, mmap.PAGESIZE):
        block[offset] = 1
    block.close()


@pytest.fixture()
def fresh_pages():
    """The peak-memory tests' allocation: see :func:`_fresh_pages`."""
    return _fresh_pages
