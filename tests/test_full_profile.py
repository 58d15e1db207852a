"""The full profile's bugs, each pinned by a test that failed before its fix (issue #16).

Everything here runs offline on a CPU: Hub-layout data is written to a temporary folder
and read back through the course's own loaders (``datasets.load_dataset`` resolves it),
and "pretrained" checkpoints are small GPT-2s saved with ``save_pretrained``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dpo_lab.tasks import code, moderation, sentiment, summarization


def _parquet_split(folder, split: str, rows: list[dict]) -> None:
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows).to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))


# --- IMDb is label-sorted on the Hub: shuffle (and balance) before taking a prefix ---------

def _label_sorted_imdb(tmp_path, n_per_label: int = 100):
    rows = [{"text": f"negative review {i}", "label": 0} for i in range(n_per_label)]
    rows += [{"text": f"positive review {i}", "label": 1} for i in range(n_per_label)]
    folder = tmp_path / "imdb" / "plain_text"
    _parquet_split(folder, "train", rows)
    _parquet_split(folder, "test", rows)
    return str(tmp_path / "imdb")


def test_imdb_prefix_is_seeded_shuffled_and_label_balanced(tmp_path):
    source = _label_sorted_imdb(tmp_path)
    first = sentiment.load_reviews(source, "train", limit=20)
    assert sum(t.startswith("positive") for t in first) == 10  # the Hub's first 20 rows are all negative
    assert first == sentiment.load_reviews(source, "train", limit=20, seed=0)  # seeded: it repeats
    assert first != sentiment.load_reviews(source, "train", limit=20, seed=1)
    assert first[:2] != ["negative review 0", "negative review 1"]
    # the evaluation prompts come from a balanced prefix of the test split too
    cfg = {"reviews": source, "n_eval_prompts": 10, "seed": 0}
    held_out = sentiment.load_reviews(source, "test", 10, seed=0)
    assert sum(t.startswith("positive") for t in held_out) == 5
    assert len(sentiment.eval_prompts(cfg)) == 10


def test_tldr_and_mbpp_prefixes_are_shuffled(tmp_path):
    rows = [{"prompt": f"POST {i}\nTL;DR:", "completion": f" summary {i}"} for i in range(50)]
    _parquet_split(tmp_path / "tldr" / "data", "train", rows)
    got = summarization.load_tldr(str(tmp_path / "tldr"), "train", limit=5)
    assert [r["prompt"] for r in got] != [f"POST {i}\nTL;DR:" for i in range(5)]
    assert got == summarization.load_tldr(str(tmp_path / "tldr"), "train", limit=5, seed=0)


# --- SFT trains where the model will be used, and dropout is off however it is loaded ------

def _pretrained_gpt2_with_dropout(tmp_path, tokenizer):
    """A 'pretrained' GPT-2 checkpoint as the Hub ships one: dropout 0.1 in its config."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_head=2, n_embd=16, n_positions=256,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    assert config.resid_pdrop == 0.1
    folder = tmp_path / "gpt2-like"
    GPT2LMHeadModel(config).save_pretrained(folder)
    return str(folder)


def _sentiment_cfg(model: str) -> dict:
    return dict(model=model, model_sizes=None, reviews="generated", n_sft_reviews=8, sft_epochs=1, sft_lr=1e-3,
                sft_batch_size=8, max_length=32, seed=0)


def _dropout_probabilities(model) -> set[float]:
    return {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}


def test_sft_model_from_the_runs_cache_has_dropout_off(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)  # runs/ goes here
    cfg = _sentiment_cfg(_pretrained_gpt2_with_dropout(tmp_path, tokenizer))
    trained, folder, history = sentiment.sft_model(cfg, tokenizer, progress=False, device="cpu")
    reloaded, again, cached_history = sentiment.sft_model(cfg, tokenizer, progress=False, device="cpu")
    assert again == folder  # the second call came from the cache
    assert history is not None and len(history) > 0 and cached_history is None
    assert _dropout_probabilities(trained) == {0.0}
    assert _dropout_probabilities(reloaded) == {0.0}
    # in train mode (as DPO runs the policy) two forward passes now agree: step-0 loss is log 2
    ids = torch.tensor([tokenizer.encode("The film was great")])
    reloaded.train()
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, reloaded(ids).logits)


def test_summarization_sft_model_from_the_cache_has_dropout_off(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    cfg = dict(model=_pretrained_gpt2_with_dropout(tmp_path, tokenizer), model_sizes=None, documents="generated",
               n_sft_docs=8, sft_epochs=1, sft_lr=1e-3, sft_batch_size=8, max_length=160, seed=0)
    summarization.sft_model(cfg, tokenizer, progress=False, device="cpu")
    reloaded, _, history = summarization.sft_model(cfg, tokenizer, progress=False, device="cpu")
    assert history is None and _dropout_probabilities(reloaded) == {0.0}


class _Stop(Exception):
    pass


@pytest.mark.parametrize("task", ["sentiment", "summarization"])
def test_sft_trains_on_the_device_it_is_given(tmp_path, monkeypatch, tokenizer, task):
    """One device decision: the model is on it when SFT starts (not moved after training)."""
    import dpo_lab.train

    monkeypatch.chdir(tmp_path)
    seen = {}

    def spy(model, *args, **kwargs):  # stands in for the training loop only: records where it would run
        seen["device"] = next(model.parameters()).device
        raise _Stop

    monkeypatch.setattr(dpo_lab.train, "train_sft", spy)
    if task == "sentiment":
        cfg = _sentiment_cfg("tiny") | {"model_sizes": dict(n_layer=1, n_embd=16, n_head=2)}
        call = lambda: sentiment.sft_model(cfg, tokenizer, progress=False, device="meta")  # noqa: E731
    else:
        cfg = dict(model="tiny", model_sizes=dict(n_layer=1, n_embd=16, n_head=2), documents="generated",
                   n_sft_docs=8, sft_epochs=1, sft_lr=1e-3, sft_batch_size=8, max_length=160, seed=0)
        call = lambda: summarization.sft_model(cfg, tokenizer, progress=False, device="meta")  # noqa: E731
    with pytest.raises(_Stop):
        call()
    assert seen["device"] == torch.device("meta")


# --- SMS Spam has no hard cases: the easy/hard table still has both columns ----------------

def test_right_decisions_by_difficulty_without_hard_cases():
    records = [moderation.map_sms_spam({"sms": "Win a prize now!\n", "label": 1}),
               moderation.map_sms_spam({"sms": "See you at 6\n", "label": 0})]
    assert not any(r["hard"] for r in records)
    spam, ham = (moderation.to_completion(r["verdict"]) for r in records)
    outputs = {"SFT": [spam, spam], "DPO": [spam, ham]}
    table = moderation.right_decisions_by_difficulty(outputs, records)
    assert list(table.columns) == ["easy", "hard"]
    assert table.loc["SFT", "easy"] == 0.5 and table.loc["DPO", "easy"] == 1.0
    assert table["hard"].isna().all()


def test_right_decisions_by_difficulty_on_the_generated_data():
    records = moderation.load_messages("generated", "test", 40)
    outputs = {"gold": [moderation.to_completion(r["verdict"]) for r in records]}
    table = moderation.right_decisions_by_difficulty(outputs, records)
    assert table.loc["gold", "easy"] == 1.0 and table.loc["gold", "hard"] == 1.0


# --- empty data: a clear error naming what was empty, never an endless loop -----------------

def test_training_on_no_pairs_is_a_clear_error(tokenizer, tiny_model):
    from dpo_lab.train import train_dpo, train_sft

    with pytest.raises(ValueError, match="preference pairs are empty"):
        train_dpo(tiny_model, tiny_model, tokenizer, [], progress=False)
    with pytest.raises(ValueError, match="SFT examples are empty"):
        train_sft(tiny_model, tokenizer, [], [], progress=False)


def test_no_execution_pairs_is_a_clear_error():
    task = {"task_id": "t1", "prompt": "def f(x):\n    \"\"\"Return x.\"\"\"", "tests": ["assert f(1) == 1"]}
    with pytest.raises(ValueError, match="no execution pairs: in 1 tasks.*0 pass all tests, 3 pass none"):
        code.execution_pairs([task] * 3, ["\n    return 0", "\n    return 2", "\n    return 3"], np.zeros(3))
    assert code.execution_pairs([task] * 2, ["a", "b"], np.zeros(2), allow_empty=True) == []


# --- notebook 04: pairs and evaluation on one task family (MBPP), with stop sequences -------

def _mbpp_rows(start: int, n: int) -> list[dict]:
    return [{"task_id": start + i, "text": f"Write a function to add {i} to a number.",
             "code": f"def add_{i}(x):\n    return x + {i}", "test_list": [f"assert add_{i}(1) == {1 + i}"],
             "test_setup_code": "", "challenge_test_list": []} for i in range(n)]


def test_mbpp_train_and_test_splits_share_the_prompt_format(tmp_path):
    folder = tmp_path / "mbpp" / "full"
    _parquet_split(folder, "train", _mbpp_rows(601, 6))
    _parquet_split(folder, "validation", _mbpp_rows(511, 4))
    _parquet_split(folder, "test", _mbpp_rows(11, 5))
    source = str(tmp_path / "mbpp")
    train = code.load_mbpp(source, split="train+validation", config="full")
    test = code.load_mbpp(source, split="test", config="full")
    assert len(train) == 10 and len(test) == 5
    assert {t["split"] for t in train} == {"train"} and {t["split"] for t in test} == {"heldout"}
    assert not {t["task_id"] for t in train} & {t["task_id"] for t in test}
    assert all(t["prompt"].startswith('"""Write a function') for t in train + test)
    assert [t["task_id"] for t in train] != sorted(t["task_id"] for t in train)  # shuffled, seeded
    corpus = code.sft_corpus(train, per_task=24)
    assert len(corpus) == 10 and all(r["kind"] == "correct" for r in corpus)  # MBPP: the reference once


def test_stop_sequences_end_an_mbpp_completion_after_its_function():
    text = "def add_1(x):\n    return x + 1\n\nprint(add_1(2))\ndef other():\n    pass"
    assert code.cut_at_stop(text) == "def add_1(x):\n    return x + 1\n"
    body = "\n    return x + 2"
    assert code.cut_at_stop(body) == body  # a generated task's body has no stop sequence
    assert code.cut_at_stop("\ndef f(x):\n    return x") == "\ndef f(x):\n    return x"  # not at position 0


def test_batches_over_no_items_raise_instead_of_looping_forever():
    from dpo_lab.train import shuffled_batches

    with pytest.raises(ValueError, match="the reward-model pairs are empty"):
        next(shuffled_batches(0, 4, 1.0, 0, what="reward-model pairs"))
    with pytest.raises(ValueError, match="training examples are empty"):
        next(shuffled_batches(0, 4, 1.0, 0))


# --- smoke scale: pick_config cuts counts, never ids, columns, lengths or precision -----------

def test_pick_config_at_smoke_scale_cuts_only_counts(monkeypatch):
    from dpo_lab.env import get_scale, pick_config

    full = dict(model="gpt2", tokenizer="gpt2", reviews="stanfordnlp/imdb", max_length=128, max_new_tokens=48,
                sft_lr=5e-5, betas=[0.05, 0.1], amp=True, model_sizes=None, n_sft_reviews=10000, sft_batch_size=16,
                sft_epochs=1, samples_per_prompt=4, eval_samples=20, k=10, steps=64, probe_every=16,
                overopt_steps=192, overopt_checkpoints=4, data_sizes=[100, 1000, 10000], bon_ns=[1, 2, 4, 8],
                n_layer=12, denoiser={"kind": "unet", "base": 32}, stop_sequences=["\ndef "], T=200)
    configs = {"tiny": {"model": "tiny"}, "full": full}
    monkeypatch.setenv("DPO_LAB_SCALE", "smoke")
    assert get_scale() == "smoke"
    cut = pick_config(configs, "full")
    for key in ("model", "tokenizer", "reviews", "max_length", "max_new_tokens", "sft_lr", "betas", "amp",
                "model_sizes", "n_layer", "denoiser", "stop_sequences"):
        assert cut[key] == full[key], key
    assert (cut["n_sft_reviews"], cut["sft_batch_size"], cut["sft_epochs"]) == (100, 2, 1)
    assert (cut["samples_per_prompt"], cut["eval_samples"], cut["k"]) == (4, 4, 2)
    assert cut["steps"] % cut["probe_every"] == 0 and cut["steps"] >= 4
    # notebook 08 splits overopt_steps into overopt_checkpoints (and 2) evaluations, each on a probe step
    assert cut["overopt_steps"] % (cut["probe_every"] * math.lcm(cut["overopt_checkpoints"], 2)) == 0
    assert cut["data_sizes"] == [1000, 10000] and cut["bon_ns"] == [1, 2]
    assert cut["T"] == 4  # notebook 06's diffusion steps, a step count: floored at SMOKE_MIN_STEPS
    assert pick_config(configs, "tiny") == {"model": "tiny"}
    monkeypatch.delenv("DPO_LAB_SCALE")
    assert pick_config(configs, "full") == full  # normal scale: the config as written
    monkeypatch.setenv("DPO_LAB_SCALE", "huge")
    with pytest.raises(ValueError, match="DPO_LAB_SCALE"):
        pick_config(configs, "full")
