"""The moderation task: verdict parser, FLAG metrics by hand, pairs, generator, SMS Spam mapping."""

import json

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
    rebuilt = mod.write_messages(tmp_path / "m.jsonl")
    assert rebuilt.read_bytes() == mod.DATA_PATH.read_bytes()
    assert mod.DATA_PATH.stat().st_size < 1_000_000


def test_shipped_messages_are_consistent():
    records = [json.loads(line) for line in mod.DATA_PATH.read_text(encoding="utf-8").splitlines()]
    assert len(records) == mod.N_MESSAGES and len({r["text"] for r in records}) == len(records)
    for r in records:
        sub = mod.SUBTYPE_BY_NAME[r["subtype"]]
        assert (r["label"], r["category"], r["hard"], r["verdict"]) == (sub.label, sub.category, sub.hard, sub.verdict)
        assert mod.parse_verdict(r["verdict"]).decision == r["label"]
    assert {r["subtype"] for r in records} == set(mod.SUBTYPE_BY_NAME)  # every kind, hard cases included
    sizes = {s: len(mod.load_messages("generated", s)) for s in mod.SPLITS}
    assert sizes == {"sft": 600, "prefs": 500, "test": 400}
    with pytest.raises(ValueError, match="split must be one of"):
        mod.load_messages("generated", "train")


def test_build_pairs_picks_the_rejected_verdict_as_documented():
    scam = {"text": "Send 45 today", "label": "flag", "subtype": "prize_fee",
            "verdict": "FLAG scam: asks for a fee to claim a prize"}
    ok = {"text": "See you at 9", "label": "allow", "subtype": "ordinary",
          "verdict": "ALLOW: ordinary personal message"}
    samples = [
        [" FLAG scam: asks for a fee to claim a prize", " FLAG spam: unsolicited advertising", " ALLOW: fine"],
        [" ALLOW: ordinary personal message", " gibberish"],  # no usable wrong verdict -> stand-in
    ]
    pairs, report = mod.build_pairs([scam, ok], samples, "both")
    assert report == {"on_policy_decision": 1, "on_policy_reason": 0, "stand_in": 1}
    assert pairs[0]["chosen"] == " FLAG scam: asks for a fee to claim a prize"
    assert pairs[0]["rejected"] == " ALLOW: fine"  # a wrong decision beats a wrong reason
    assert pairs[1]["rejected"] == " FLAG spam: unsolicited advertising"  # the lookalike of "ordinary"
    pairs, report = mod.build_pairs([scam], [samples[0][:2]], "both")
    assert pairs[0]["rejected"] == " FLAG spam: unsolicited advertising" and report["on_policy_reason"] == 1
    assert [p["label"] for p in mod.build_pairs([scam, ok], samples, "misses")[0]] == ["flag"]
    assert [p["label"] for p in mod.build_pairs([scam, ok], samples, "false_flags")[0]] == ["allow"]
    with pytest.raises(ValueError, match="construction must be one of"):
        mod.build_pairs([scam], samples[:1], "all")


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
    assert [len(parts[s]) for s in ("sft", "prefs", "test")] == [4, 4, 2]
    everything = parts["sft"] + parts["prefs"] + parts["test"]
    assert sorted(r["text"] for r in everything) == sorted(r["sms"].strip() for r in rows)
    first = next(r for r in everything if r["text"] == "Free entry 1! Text WIN now")
    assert first == {"text": "Free entry 1! Text WIN now", "label": "flag", "category": "spam", "subtype": "sms_flag",
                     "hard": False, "verdict": "FLAG spam: unsolicited bulk message"}
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
