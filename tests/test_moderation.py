"""The moderation task: verdict parser, FLAG metrics by hand, pairs, generator, controls, SMS Spam mapping."""

import json
from pathlib import Path

import numpy as np
import pytest

from dpo_lab.tasks import moderation as mod


@pytest.mark.parametrize("text, decision, category, reason", [
    (" FLAG scam: asks for a fee to claim a prize", "flag", "scam", "asks for a fee to claim a prize"),
    ("FLAG phishing: asks for a one-time code\nMessage: more text", "flag", "phishing", "asks for a one-time code"),
    ("  ALLOW: ordinary personal message  ", "allow", None, "ordinary personal message"),
    ("FLAG fraud: asks for money", None, None, None),  # unknown category
    ("FLAG scam:", None, None, None),  # no reason
    ("ALLOW", None, None, None),
    ("allow: fine", None, None, None),  # the format is exact, case included
    ("", None, None, None),
    ("The message looks fine to me", None, None, None),
])
def test_parse_verdict(text, decision, category, reason):
    assert mod.parse_verdict(text) == mod.Verdict(decision, category, reason)


def test_flag_metrics_by_hand():
    # 4 true flags: FLAG, FLAG, ALLOW, unparseable  -> TP 2, missed 2
    # 3 true allows: FLAG, ALLOW, unparseable       -> FP 1
    labels = ["flag"] * 4 + ["allow"] * 3
    outputs = [" FLAG scam: x", " FLAG spam: y", " ALLOW: z", " ???", " FLAG phishing: w", " ALLOW: v", " FLAG"]
    m = mod.flag_metrics(labels, outputs)
    assert m["confusion"].tolist() == [[2, 1, 1], [1, 1, 1]]
    assert (m["tp"], m["fp"], m["missed"], m["false_flags"], m["unparseable"]) == (2, 1, 2, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))  # = 4/7
    assert m["f1"] == pytest.approx(4 / 7)
    # 10 per missed scam, 1 per false flag, per 1000 messages: (10*2 + 1*1) / 7 * 1000
    assert mod.mistake_cost(m, n=7) == pytest.approx(3000.0)


def test_flag_metrics_zero_denominators_and_bad_input():
    m = mod.flag_metrics(["allow", "allow"], [" ALLOW: a", " nonsense"])
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="2 labels but 1 outputs"):
        mod.flag_metrics(["flag", "allow"], [" ALLOW: a"])
    with pytest.raises(ValueError, match="'spam'"):
        mod.flag_metrics(["spam"], [" ALLOW: a"])


def test_generator_is_seeded_and_file_rebuilds_bit_for_bit(tmp_path):
    assert mod.generate_messages(50, seed=3) == mod.generate_messages(50, seed=3)
    assert mod.generate_messages(50, seed=3) != mod.generate_messages(50, seed=4)
    rebuilt = mod.write_messages(tmp_path / "m.jsonl")  # what `python -m dpo_lab.tasks.moderation` writes
    assert rebuilt.read_bytes() == mod.DATA_PATH.read_bytes()
    assert mod.DATA_PATH.stat().st_size < 1_000_000
    with pytest.raises(ValueError, match="prevalence"):
        mod.generate_messages(10, prevalence=1.5)
    with pytest.raises(ValueError, match="noise_rate"):
        mod.generate_messages(10, noise_rate=0.6)


def test_shipped_messages_are_consistent():
    records = [json.loads(line) for line in mod.DATA_PATH.read_text(encoding="utf-8").splitlines()]
    assert len(records) == mod.N_MESSAGES
    assert len({(r["thread"], r["sender"], r["text"]) for r in records}) == len(records)  # no message twice
    for r in records:
        harmful = r["label"] == "flag"
        assert r["verdict"] == mod.VERDICTS[r["family"]][0 if harmful else 1].format(risky=r["verdict"].split()[-1])
        assert mod.parse_verdict(r["verdict"]).decision == r["label"]
        assert mod.parse_verdict(r["annotated_verdict"]).decision == r["annotated_label"]
        assert r["noisy"] == (r["annotated_label"] != r["label"])
        assert r["hard"] == (r["relation"] != "none") and r["subtype"] == f"{r['family']}_{r['label']}"
    assert {r["subtype"] for r in records} == {"ordinary_allow", "spam_flag"} | {
        f"{f}_{lab}" for f in ("domain", "order", "thread") for lab in ("flag", "allow")}
    sizes = {s: len(mod.load_messages("generated", s)) for s in mod.SPLITS}
    assert sizes == {"sft": 600, "prefs": 500, "val": 300, "test": 600}
    for split in mod.SPLITS:  # a harmful minority in every split, and a few flipped labels
        part = mod.load_messages("generated", split)
        assert 0.15 <= np.mean([r["label"] == "flag" for r in part]) <= 0.25, split
        assert 0.01 <= np.mean([r["noisy"] for r in part]) <= 0.08, split
    with pytest.raises(ValueError, match="split must be one of"):
        mod.load_messages("generated", "train")


def test_relational_families_use_the_same_words_for_both_verdicts():
    """Harmful and harmless messages of a relational family differ in a relation, not in their words."""
    import collections
    import random

    rng = random.Random(0)
    for family in ("domain", "order", "thread"):
        vocab = {True: collections.Counter(), False: collections.Counter()}
        for harmful in (True, False):
            for _ in range(400):
                m = mod._message(rng, family, harmful)
                vocab[harmful].update(f"{m['thread']} {m['sender']} {m['text']}".replace(".com", " ").split())
        assert set(vocab[True]) == set(vocab[False]), family
    # domain: the link's domain is the sender's exactly when the message is harmless
    for harmful in (True, False):
        m = mod._message(rng, "domain", harmful)
        assert (m["text"].split(".com/")[0].split()[-1] == m["sender"][:-len(".com")]) is not harmful
    # order: harmful exactly when the risky object is the one you are told to use (the second)
    m = mod._message(random.Random(1), "order", True)
    assert m["text"].split("do not")[1].split(",")[1].split()[2] in mod.RISKY


def test_a_bag_of_words_cannot_read_the_relations():
    """On the shipped data the plain classifier stays far from a perfect F1 (notebook 09 claims at most 0.90)."""
    seen = mod.load_messages("generated", "sft") + mod.load_messages("generated", "prefs")
    test = mod.load_messages("generated", "test")
    predict = mod.fit_bow_classifier([mod.to_prompt(r) for r in seen], [r["annotated_label"] for r in seen])
    outputs = predict([mod.to_prompt(r) for r in test])
    f1 = mod.flag_metrics([r["label"] for r in test], outputs)["f1"]
    assert f1 <= 0.6
    easy = [o for o, r in zip(outputs, test) if r["relation"] == "none"]
    assert np.mean([mod.parse_verdict(o).decision == r["label"]  # it does read the easy part
                    for o, r in zip(easy, [r for r in test if r["relation"] == "none"])]) >= 0.95


def test_the_words_are_ones_the_course_tokenizer_knows():
    from dpo_lab.tokenizer import load_tokenizer

    records = mod.generate_messages(500, seed=1)
    texts = [f"{r['thread']} {r['sender']} {r['text']} {r['verdict']}" for r in records]
    counts = mod.word_token_counts(load_tokenizer(), texts)
    # at most three tokens a word, except the category name "phishing" (five: p-h-is-h-ing)
    assert {w: n for w, n in counts.items() if n > 3} == {"phishing": 5}
    assert np.mean([n == 1 for n in counts.values()]) >= 0.7  # most words are one token


def test_prompt_shows_thread_and_sender_when_there_are_some():
    record = {"thread": "tom : I paid for the film , it was 20 .", "sender": "sam",
              "text": "can you return the 20 for the film today ?"}
    assert mod.to_prompt(record) == ("Thread: tom : I paid for the film , it was 20 .\nFrom: sam\n"
                                     "Message: can you return the 20 for the film today ?\nVerdict:")
    bare = {"text": "hi", "thread": None, "sender": None}
    assert mod.to_prompt("hi") == mod.to_prompt(bare) == "Message: hi\nVerdict:"


def test_f1_from_decisions_equals_flag_metrics():
    labels = ["flag"] * 4 + ["allow"] * 3
    outputs = [" FLAG scam: x", " FLAG spam: y", " ALLOW: z", " ???", " FLAG phishing: w", " ALLOW: v", " FLAG"]
    flagged = [mod.parse_verdict(o).decision == "flag" for o in outputs]
    assert mod.f1_from_decisions(np.array(labels) == "flag", flagged) == pytest.approx(4 / 7)
    assert mod.f1_from_decisions([False, False], [False, False]) == 0.0


def test_build_pairs_picks_the_rejected_verdict_as_documented():
    scam = {"text": "can you return the 20", "label": "flag", "annotated_label": "flag", "noisy": False,
            "verdict": "FLAG scam: the sender did not pay", "annotated_verdict": "FLAG scam: the sender did not pay",
            "lookalike": "ALLOW: the sender paid for it", "thread": "tom : I paid", "sender": "sam"}
    ok = {"text": "see you at lunch", "label": "allow", "annotated_label": "allow", "noisy": False,
          "verdict": "ALLOW: a friend's message", "annotated_verdict": "ALLOW: a friend's message",
          "lookalike": "FLAG spam: it is an ad", "thread": "None", "sender": "tom"}
    samples = [
        [" FLAG scam: the sender did not pay", " FLAG spam: it is an ad", " ALLOW: fine"],
        [" ALLOW: a friend's message", " gibberish"],  # no usable wrong verdict -> stand-in
    ]
    pairs, report = mod.build_pairs([scam, ok], samples, "both")
    assert report == {"on_policy_decision": 1, "on_policy_reason": 0, "stand_in": 1, "cut_off": 0}
    assert pairs[0]["chosen"] == " FLAG scam: the sender did not pay"
    assert pairs[0]["prompt"] == mod.to_prompt(scam)
    assert pairs[0]["rejected"] == " ALLOW: fine"  # a wrong decision beats a wrong reason
    assert pairs[1]["rejected"] == " FLAG spam: it is an ad"  # the lookalike of an ordinary message
    pairs, report = mod.build_pairs([scam], [samples[0][:2]], "both")
    assert pairs[0]["rejected"] == " FLAG spam: it is an ad" and report["on_policy_reason"] == 1
    assert [p["label"] for p in mod.build_pairs([scam, ok], samples, "misses")[0]] == ["flag"]
    assert [p["label"] for p in mod.build_pairs([scam, ok], samples, "false_flags")[0]] == ["allow"]
    with pytest.raises(ValueError, match="construction must be one of"):
        mod.build_pairs([scam], samples[:1], "all")
    # a flipped label: the annotator said "allow", so the pair prefers the (wrong) ALLOW verdict
    flipped = dict(scam, annotated_label="allow", annotated_verdict="ALLOW: the sender paid for it", noisy=True)
    pairs, report = mod.build_pairs([flipped], [[" ALLOW: the sender paid for it"]], "both")
    assert pairs[0]["chosen"] == " ALLOW: the sender paid for it"
    assert pairs[0]["rejected"] == " FLAG scam: the sender did not pay" and report["stand_in"] == 1


def test_classifier_head_trains_for_exactly_the_steps_asked():
    from dpo_lab.models import tiny_gpt2
    from dpo_lab.tokenizer import load_tokenizer

    tok = load_tokenizer()
    lm = tiny_gpt2(tok, seed=0, n_layer=1, n_embd=32, n_head=2)
    texts = ["the film was great", "open the link now"] * 8
    labels = ["allow", "flag"] * 8
    predict, history = mod.train_classifier_head(lm, tok, texts, labels, steps=40, batch_size=8, lr=3e-3,
                                                 progress=False)
    assert history["step"].tolist() == list(range(1, 41))  # steps from 1, as in every loop
    assert history.loss.iloc[-5:].mean() < history.loss.iloc[:5].mean()
    assert [mod.parse_verdict(o).decision for o in predict(texts[:2])] == ["allow", "flag"]
    assert all(p.requires_grad for p in lm.parameters())  # the language model itself is left as it was
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        mod.train_classifier_head(lm, tok, texts[:2], labels[:1], steps=1)


def test_sms_spam_mapping_on_a_local_parquet_file(tmp_path):
    """ucirvine/sms_spam: `sms` (str) and `label` (ClassLabel 0 ham, 1 spam), one train split."""
    import datasets

    rows = [{"sms": f"Free entry {i}! Text WIN now " if i % 2 else f"See you at {i} ", "label": i % 2}
            for i in range(10)]
    features = datasets.Features({"sms": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["ham", "spam"])})
    folder = tmp_path / "sms_spam" / "plain_text"  # the Hub repository's layout
    folder.mkdir(parents=True)
    path = folder / "train-00000-of-00001.parquet"
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(path))
    parts = {s: mod.load_messages(str(tmp_path / "sms_spam"), s, seed=0) for s in mod.SPLITS}
    assert parts == {s: mod.load_messages(str(path), s, seed=0) for s in mod.SPLITS}  # a single file reads the same
    assert [len(parts[s]) for s in ("sft", "prefs", "val", "test")] == [4, 3, 1, 2]  # 35/35/10/20 of 10 rows
    everything = parts["sft"] + parts["prefs"] + parts["val"] + parts["test"]
    assert sorted(r["text"] for r in everything) == sorted(r["sms"].strip() for r in rows)
    first = next(r for r in everything if r["text"] == "Free entry 1! Text WIN now")
    assert first == {"thread": None, "sender": None, "text": "Free entry 1! Text WIN now", "label": "flag",
                     "verdict": "FLAG spam: unsolicited bulk message", "category": "spam", "family": "sms",
                     "subtype": "sms_flag", "relation": "none", "hard": False, "annotated_label": "flag",
                     "annotated_verdict": "FLAG spam: unsolicited bulk message", "noisy": False}
    assert mod.to_prompt(first) == "Message: Free entry 1! Text WIN now\nVerdict:"  # no thread, no sender
    assert mod.map_sms_spam({"sms": "hi", "label": "ham"})["verdict"] == "ALLOW: ordinary personal message"
    # the full profile's pairs: a Hub record's stand-in rejected verdict is the other class's verdict
    pairs, report = mod.build_pairs([first], [[" gibberish"]], "both")
    assert pairs[0]["rejected"] == " ALLOW: ordinary personal message" and report["stand_in"] == 1
    assert mod.wrong_verdicts(first)["reason"].startswith("FLAG ")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sms": "ok", "label": 0}\n{"text": "no sms field", "label": 1}\n')
    with pytest.raises(ValueError, match=r"row 2: field 'sms' is missing"):
        mod.load_messages(str(bad), "sft")


def test_bow_classifier_separates_an_easy_case():
    texts = ["win a prize now", "pay the fee now", "see you at lunch", "thanks for lunch"] * 3
    labels = ["flag", "flag", "allow", "allow"] * 3
    predict = mod.fit_bow_classifier(texts, labels)
    out = predict(["win a fee prize", "lunch at noon"])
    assert [mod.parse_verdict(o).decision for o in out] == ["flag", "allow"]
    assert np.allclose(mod.flag_metrics(labels, predict(texts))["f1"], 1.0)


def test_the_sweep_uses_the_notebooks_settings():
    """The validation sweep must train the SFT policy and DPO as notebook 09's tiny profile does."""
    from dpo_lab.sizing import notebook_config
    from dpo_lab.tasks import moderation_sweep
    from dpo_lab.tasks.moderation_sweep import GRID, SETTINGS

    tiny = notebook_config(Path(__file__).resolve().parent.parent / "notebooks" / "09_content_moderation.ipynb",
                           "tiny")
    assert {k: tiny[k] for k in SETTINGS} == SETTINGS
    # the notebook's DPO settings are points of the grid
    assert tiny["headline_beta"] in GRID["beta"] and tiny["headline_lr"] in GRID["dpo_lr"]
    assert tiny["dpo_epochs"] in GRID["dpo_epochs"] and tiny["construction"] in GRID["construction"]
    assert "test" not in moderation_sweep.main.__code__.co_consts  # it never loads the test split


def test_load_messages_accepts_its_own_default_split():
    assert mod.load_messages() == mod.load_messages("generated", "sft")
    with pytest.raises(ValueError, match="split must be one of"):
        mod.load_messages("generated", "train")
