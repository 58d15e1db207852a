"""The controlled-sentiment task: gold reward by hand, pairs, loaders in the Hub's layout."""

import math

import numpy as np
import pytest

from dpo_lab.tasks import sentiment


@pytest.mark.parametrize("text, score", [
    ("The film was wonderful.", 1),
    ("The film was not wonderful.", -1),  # negation flips
    ("I loved the plot but the acting was dull and boring.", 1 - 2),
    ("I would not recommend it. Never boring though.", -1 + 1),
    ("A film.", 0),
])
def test_lexicon_score_by_hand(text, score):
    assert sentiment.lexicon_score(text) == score


def test_gold_reward_is_a_probability():
    gold = sentiment.LexiconSentiment()
    got = gold(["The film was wonderful and moving.", "A film.", "Awful."])
    assert np.allclose(got, [1 / (1 + math.exp(-2)), 0.5, 1 / (1 + math.exp(1))])


def test_preference_pairs_skip_ties_and_count_them():
    prompts = ["a"] * 3 + ["b"] * 3
    texts = [" x", " y", " z", " p", " q", " r"]
    rewards = [0.2, 0.9, 0.5, 0.5, 0.5, 0.5]  # prompt b: all tie
    pairs, skipped = sentiment.preference_pairs(prompts, texts, rewards, n=3)
    assert skipped == 1 and len(pairs) == 1
    assert pairs[0] == {"prompt": "a", "chosen": " y", "rejected": " x", "chosen_reward": 0.9,
                        "rejected_reward": 0.2, "chosen_truncated": False, "rejected_truncated": False}


def test_reviews_file_is_reproducible(tmp_path):
    rebuilt = sentiment.write_reviews(tmp_path / "r.jsonl")
    assert rebuilt.read_bytes() == sentiment.DATA_PATH.read_bytes()
    train, test = sentiment.load_reviews("generated", "train"), sentiment.load_reviews("generated", "test")
    assert len(train) == 2400 and len(test) == 600 and not set(train[:50]) & set(test)


def test_imdb_layout_loader(tmp_path):
    """stanfordnlp/imdb: `text` and `label` columns, <br /> line breaks; read from a local Parquet file."""
    import datasets

    folder = tmp_path / "imdb" / "plain_text"
    folder.mkdir(parents=True)
    rows = [{"text": "Great film.<br /><br />Loved it.", "label": 1}, {"text": "Dull.", "label": 0}]
    datasets.Dataset.from_list(rows).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    # a Hub split comes back in a seeded, label-balanced order (negative first, then positive)
    assert sentiment.load_reviews(str(tmp_path / "imdb"), "train") == ["Dull.", "Great film.  Loved it."]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"review": "x"}\n')
    with pytest.raises(ValueError, match="expected a 'text' column"):
        sentiment.load_reviews(str(bad), "train")


def test_classifier_gold_reward_from_a_local_checkpoint(tmp_path, tokenizer):
    """The full profile's gold reward, exercised offline on a tiny DistilBERT saved in Hub layout."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, hidden_dim=64, n_layers=1, n_heads=2,
                              max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                              id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(config)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    gold = sentiment.ClassifierSentiment(str(tmp_path), device="cpu", batch_size=2)
    texts = ["The film was wonderful.", "Dull.", "I loved it, truly."]
    got = gold(texts)
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model.eval()(**enc).logits.softmax(-1)[:, 1].numpy()
    assert got.shape == (3,) and np.allclose(got, expected, atol=1e-5)
    with pytest.raises(ValueError, match="not 'LABEL_1'"):
        sentiment.ClassifierSentiment(str(tmp_path), positive_label="LABEL_1")
