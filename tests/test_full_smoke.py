"""Every notebook executes in the full profile, at smoke scale, against the stand-in Hub.

The stand-in Hub (:mod:`tests.standin_hub`) is built once per machine into a fixed cache
folder under a file lock (safe with ``pytest -n 2 --dist loadfile``); each notebook then runs
in its own kernel with ``DPO_LAB_PROFILE=full DPO_LAB_SCALE=smoke``, offline, from the checkout's
``notebooks/`` (so its set-up cell finds the checkout, as on a laptop), with its ``runs/`` and
``results/`` in a temporary folder. Any exception fails the test;
claims are only recorded at smoke scale (random weights show no learned effect).

Run: ``pytest -m full_smoke tests/test_full_smoke.py``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ is not a package: import its helper by name
from standin_hub import ensure_built, offline_env  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def standin_hub():
    return ensure_built()


def run_full_smoke(path: Path, hub: Path, workdir: Path, timeout: int = 900) -> float:
    """Execute ``path`` in the full profile at smoke scale against ``hub``; return its seconds.

    ``timeout`` is per cell, the tiny notebooks' limit too (pyproject.toml): notebook 07's benchmark
    cell times GPT-2 small's size on the CPU and took 430-600+ s on a busy 2-core machine.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env = {**os.environ, **offline_env(hub), "DPO_LAB_PROFILE": "full", "DPO_LAB_SCALE": "smoke",
           "DPO_LAB_RESULTS": str(workdir / "results"), "DPO_LAB_RUNS": str(workdir / "runs"), "MPLBACKEND": "Agg",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "notebooks")}})
    client.execute(env=env)
    return time.perf_counter() - start


@pytest.mark.full_smoke
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem[:2] for p in NOTEBOOKS])
def test_notebook_runs_in_the_full_profile_at_smoke_scale(path, standin_hub, tmp_path):
    seconds = run_full_smoke(path, standin_hub, tmp_path)
    print(f"{path.name}: {seconds:.0f} s in the full profile at smoke scale")


_RESOLVE = r'''
import datasets
from dpo_lab.data import load_hub_preferences
from dpo_lab.models import load_model
from dpo_lab.tasks import code, digits, moderation, sentiment, summarization
from dpo_lab.tokenizer import load_tokenizer
from transformers import AutoConfig, AutoTokenizer

for repo, cls in [("gpt2", "GPT2LMHeadModel"), ("codeparrot/codeparrot-small", "GPT2LMHeadModel"),
                  ("lvwerra/distilbert-imdb", "DistilBertForSequenceClassification"),
                  ("OpenAssistant/reward-model-deberta-v3-large-v2", "DebertaV2ForSequenceClassification")]:
    assert AutoConfig.from_pretrained(repo).architectures == [cls], repo
assert AutoTokenizer.from_pretrained("gpt2").pad_token is None  # GPT-2 ships no pad token
assert load_tokenizer("gpt2").pad_token == "<|endoftext|>"    # the course pads with EOS
assert type(load_model("gpt2", load_tokenizer("gpt2"))).__name__ == "GPT2LMHeadModel"
assert AutoConfig.from_pretrained("lvwerra/distilbert-imdb").label2id == {"NEGATIVE": 0, "POSITIVE": 1}
imdb = datasets.load_dataset("stanfordnlp/imdb", split="train")
assert imdb.column_names == ["text", "label"] and imdb.features["label"].names == ["neg", "pos"]
assert imdb["label"] == sorted(imdb["label"])  # label-sorted, as on the Hub
assert set(datasets.get_dataset_split_names("stanfordnlp/imdb")) >= {"train", "test", "unsupervised"}
reviews = sentiment.load_reviews("stanfordnlp/imdb", "train", 20)
assert len(reviews) == 20
sms = datasets.load_dataset("ucirvine/sms_spam", split="train")
assert sms.column_names == ["sms", "label"] and all(t.endswith("\n") for t in sms["sms"])
mbpp = datasets.load_dataset("google-research-datasets/mbpp", "full", split="test")
assert mbpp.column_names[:4] == ["task_id", "text", "code", "test_list"]
assert len(code.load_mbpp("google-research-datasets/mbpp", split="train+validation")) == 60
assert len(moderation.load_messages("ucirvine/sms_spam", "test")) > 0
assert summarization.load_split("trl-lib/tldr", "sft", 3)[0]["prompt"].endswith("TL;DR:")
assert len(load_hub_preferences("trl-lib/tldr-preference", "train", limit=3)) == 3
images, labels = digits.load_mnist("ylecun/mnist", split="train", limit=8)
assert tuple(images.shape) == (8, 1, 28, 28)
print("every id resolves offline")
'''


@pytest.mark.full_smoke
def test_standin_hub_resolves_every_id_with_the_courses_own_calls(standin_hub, tmp_path):
    import subprocess

    env = {**os.environ, **offline_env(standin_hub),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", _RESOLVE], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "every id resolves offline" in done.stdout
