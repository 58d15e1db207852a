"""The summarization task: generator, gold reward by hand, simulated annotators, loaders, judge."""

import json

import numpy as np
import pytest

from dpo_lab.tasks import summarization as summ

DOC = {
    "document": "The ending was horrible, the story was boring and the plot was wonderful. My friend thought the "
                "script was forgettable. We rented this movie. The theater was small. "
                "Overall, I would not recommend it.",
    "key_facts": {"aspects": {"ending": "horrible", "plot": "wonderful", "story": "boring"}, "recommend": False},
    "summary": "the ending was horrible, the story was boring and the plot was wonderful; would not recommend.",
}
PROMPT = summ.make_prompt(DOC["document"])


def test_generator_is_seeded_and_file_rebuilds_bit_for_bit(tmp_path):
    assert summ.generate_documents(30, seed=3) == summ.generate_documents(30, seed=3)
    assert summ.generate_documents(30, seed=3) != summ.generate_documents(30, seed=4)
    rebuilt = summ.write_documents(tmp_path / "docs.jsonl")
    assert rebuilt.read_bytes() == summ.DATA_PATH.read_bytes()
    assert summ.DATA_PATH.stat().st_size < 1_500_000


def test_shipped_documents_are_consistent():
    records = [json.loads(line) for line in summ.DATA_PATH.read_text(encoding="utf-8").splitlines()]
    assert len(records) == summ.N_DOCUMENTS
    assert records[0] == DOC
    gold = summ.GoldSummaryReward(records)
    reports = [summ.fact_report(r["document"], r["key_facts"], r["summary"]) for r in records]
    for r, report in zip(records, reports):
        # every key fact is stated in the review, and no reference hallucinates
        assert set(r["key_facts"]["aspects"].items()) <= summ.claims(r["document"])
        assert summ.verdict(r["document"]) == r["key_facts"]["recommend"]
        assert report["hallucinated"] == 0 and report["covered"] >= 2
    # references are good but imperfect: some leave out facts, some add the friend's view
    covered = np.array([report["covered"] for report in reports])
    assert 0.3 < np.mean(covered == 4) < 0.5
    assert 0.15 < np.mean(["my friend" in r["summary"] for r in records]) < 0.35
    rewards = gold([summ.make_prompt(r["document"]) + " " + r["summary"] for r in records])
    # the best reference: four facts in 15 words, "the plot was good, the cast was bad and the ... ; would recommend"
    assert rewards.max() == pytest.approx(1.0 - 0.02 * 15)


def test_every_value_word_is_one_token_of_the_course_tokenizer():
    from dpo_lab.tokenizer import load_tokenizer

    tokenizer = load_tokenizer("course")
    long = [w for w in summ.ASPECTS + summ.ADJECTIVES if len(tokenizer(" " + w)["input_ids"]) != 1]
    assert long == []


def test_splits_do_not_overlap_and_add_prompt_and_reference():
    splits = {name: summ.load_documents(name) for name in summ.SPLITS}
    assert [len(v) for v in splits.values()] == [1500, 1100, 200, 200]
    assert list(splits) == ["sft", "preference", "validation", "test"]
    assert splits["sft"][0]["prompt"] == PROMPT and splits["sft"][0]["reference"] == " " + DOC["summary"]
    seen = [r["document"] for v in splits.values() for r in v]
    assert len(set(seen)) == len(seen)
    assert summ.load_documents("test", limit=7) == splits["test"][:7]
    with pytest.raises(ValueError, match="split must be one of"):
        summ.load_documents("dev")


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(DOC) + "\n" + '{"document": "x", "summary": "y"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: missing field 'key_facts'"):
        summ.load_documents("sft", path=path)
    path.write_text(json.dumps(DOC) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"line 2: not valid JSON"):
        summ.load_documents("sft", path=path)


@pytest.mark.parametrize("text, expected", [
    ("the plot was good, the cast was bad", {("plot", "good"), ("cast", "bad")}),
    ("plot good and cast bad; ending: dull", {("plot", "good"), ("cast", "bad"), ("ending", "dull")}),
    ("the plot and the cast were good", {("cast", "good")}),  # "and" splits clauses
    ("the plot was dull, boring", {("plot", "dull")}),
    ("the Plot was GOOD", {("plot", "good")}),
    ("would recommend", set()),
])
def test_claims_are_read_clause_by_clause(text, expected):
    assert summ.claims(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("; would recommend.", True), ("; would not recommend.", False), ("I would never recommend it", False),
    ("the plot was good", None), ("Not bad. Would recommend", True),
])
def test_verdict(text, expected):
    assert summ.verdict(text) is expected


@pytest.mark.parametrize("summary, covered, hallucinated, n_words", [
    (" the ending was horrible and the plot was wonderful; would not recommend.", 3, 0, 12),
    (" " + DOC["summary"], 4, 0, 16),
    # the friend's verdict is in the review: no coverage, no hallucination, only words
    (" the script was forgettable", 0, 0, 4),
    # claims the review never makes, and the wrong verdict
    (" the plot was boring, the music was great; would recommend.", 0, 3, 10),
    # repeats count once as hallucinations but every word costs length
    (" the plot was boring and the plot was boring", 0, 1, 9),
    ("", 0, 0, 0),
])
def test_fact_report_by_hand(summary, covered, hallucinated, n_words):
    report = summ.fact_report(DOC["document"], DOC["key_facts"], summary)
    assert (report["covered"], report["hallucinated"], report["words"]) == (covered, hallucinated, n_words)


def test_gold_reward_by_hand():
    gold = summ.GoldSummaryReward([DOC])
    texts = [PROMPT + " " + DOC["summary"], PROMPT + " the plot was boring, the music was great; would recommend."]
    # 4/4 - 0.5*0 - 0.02*16 = 0.68 ; 0/4 - 0.5*3 - 0.02*10 = -1.7
    np.testing.assert_allclose(gold(texts), [0.68, -1.7])
    np.testing.assert_allclose(gold.without_length(texts), [1.0, -1.5])
    with pytest.raises(ValueError, match="no '\\\\nTL;DR:'"):
        gold(["a text without the separator"])
    with pytest.raises(KeyError, match="does not know this document"):
        gold([summ.make_prompt("Another document.") + " x"])


def test_annotate_follows_bradley_terry_and_counts_what_it_skips():
    docs = summ.load_documents("sft", limit=200)
    gold = summ.GoldSummaryReward(docs)
    prompts = [d["prompt"] for d in docs]
    full = [d["reference"] for d in docs]
    short = [" would recommend." if d["key_facts"]["recommend"] else " would not recommend." for d in docs]
    same = full[:10] + short[10:]
    pairs, report = summ.annotate(prompts, full, same, gold, temperature=0.1, seed=0)
    assert report["identical_skipped"] == 10 and report["pairs"] == 190 == len(pairs)
    # P(label agrees with gold) = sigmoid(|R(a) - R(b)| / 0.1), and the draws are seeded
    r_full, r_short = gold([p + c for p, c in zip(prompts, full)]), gold([p + c for p, c in zip(prompts, short)])
    expected = np.mean(1 / (1 + np.exp(np.abs(r_full - r_short)[10:] / 0.1)))
    assert report["disagreement"] == pytest.approx(expected, abs=0.05)
    assert summ.annotate(prompts, full, same, gold, 0.1, seed=0) == (pairs, report)
    for p in pairs[:20]:
        assert p["chosen"] != p["rejected"]
        assert p["chosen_gold"] == pytest.approx(gold([p["prompt"] + p["chosen"]])[0])
        assert p["rejected_gold"] == pytest.approx(gold([p["prompt"] + p["rejected"]])[0])
    # a very noisy annotator is a coin flip; a near-noiseless one always agrees with gold
    _, noisy = summ.annotate(prompts, full, short, gold, temperature=100.0, seed=0)
    _, sharp = summ.annotate(prompts, full, short, gold, temperature=1e-4, seed=0)
    assert 0.4 < noisy["disagreement"] < 0.6 and sharp["disagreement"] == 0.0
    with pytest.raises(ValueError, match="temperature must be > 0"):
        summ.annotate(prompts, full, short, gold, temperature=0.0)
    assert report["longer_chosen"] == pytest.approx(np.mean([len(summ.words(p["chosen"])) >
                                                             len(summ.words(p["rejected"])) for p in pairs]))
    with pytest.raises(ValueError, match="as many prompts as summaries"):
        summ.annotate(prompts, full[:3], short, gold, temperature=0.1)


def test_load_tldr_reads_a_local_file_in_the_hub_schema(tmp_path):
    rows = [{"prompt": "SUBREDDIT: r/test\nTITLE: t\nPOST: a long post\nTL;DR:", "completion": " a summary"},
            {"prompt": "SUBREDDIT: r/x\nTITLE: u\nPOST: another\nTL;DR:", "completion": " short"}]
    path = tmp_path / "tldr.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = summ.load_tldr(str(path), limit=1)
    assert records == [{"prompt": rows[0]["prompt"], "reference": " a summary"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"post": "x", "summary": "y"}) + "\n")
    with pytest.raises(ValueError, match="missing \\['completion', 'prompt'\\]"):
        summ.load_tldr(str(bad))


def test_judge_reward_loads_a_local_reward_model_in_hub_layout(tmp_path):
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from dpo_lab.tokenizer import load_tokenizer

    tokenizer = load_tokenizer("course")
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=16, n_head=2, num_labels=1,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path / "judge")
    tokenizer.save_pretrained(tmp_path / "judge")
    judge = summ.JudgeReward(str(tmp_path / "judge"), device="cpu", batch_size=2)
    texts = [PROMPT + " the plot was wonderful.", PROMPT + " the plot was boring.", PROMPT + " would recommend."]
    scores = judge(texts)
    assert scores.shape == (3,) and np.isfinite(scores).all() and len(set(scores.round(6))) == 3
    np.testing.assert_allclose(judge(texts[::-1]), scores[::-1], rtol=1e-5, atol=1e-6)  # batching does not matter
    GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=16, n_head=2,
                                             num_labels=2)).save_pretrained(tmp_path / "two")
    tokenizer.save_pretrained(tmp_path / "two")
    with pytest.raises(ValueError, match="has 2 labels; a reward model has one"):
        summ.JudgeReward(str(tmp_path / "two"), device="cpu")


def test_annotators_length_bonus_is_bradley_terry_on_gold_plus_a_bonus_a_word():
    docs = summ.load_documents("sft", limit=200)
    gold = summ.GoldSummaryReward(docs)
    prompts = [d["prompt"] for d in docs]
    # a one-fact summary, and the same with four filler words: the gold reward prefers the short one by 0.08
    short = [f" the {a} was {j}." for d in docs for a, j in list(d["key_facts"]["aspects"].items())[:1]]
    padded = [t[:-1] + " and i saw it." for t in short]
    r_short, r_padded = gold([p + t for p, t in zip(prompts, short)]), gold([p + t for p, t in zip(prompts, padded)])
    assert np.allclose(r_short - r_padded, 0.02 * 4)
    _, plain = summ.annotate(prompts, short, padded, gold, temperature=1e-4, seed=0)
    _, biased = summ.annotate(prompts, short, padded, gold, temperature=1e-4, seed=0, length_bonus=0.1)
    # utility difference padded - short = -0.08 + 0.1 * 4 = +0.32: the biased annotators always pick the padded one
    assert plain["longer_chosen"] == 0.0 and plain["disagreement"] == 0.0
    assert biased["longer_chosen"] == 1.0 and biased["disagreement"] == 1.0
    # at temperature 0.4: P(padded) = sigmoid(0.32 / 0.4), seeded
    _, noisy = summ.annotate(prompts, short, padded, gold, temperature=0.4, seed=0, length_bonus=0.1)
    assert noisy["longer_chosen"] == pytest.approx(1 / (1 + np.exp(-0.8)), abs=0.07)
    assert summ.ANNOTATOR_LENGTH_BONUS > 0.02  # the annotators' bonus outweighs the gold reward's cost a word


def test_the_committed_sweep_matches_the_notebook_and_its_choice_follows_from_its_scores():
    from dpo_lab.tasks.summarization_sweep import (
        BETAS,
        KNOBS,
        LEARNING_RATES,
        TEMPERATURES,
        choose,
        load_sweep,
        notebook_tiny_config,
    )

    sweep, cfg = load_sweep(), notebook_tiny_config()
    assert sweep["config"] == {k: cfg[k] for k in KNOBS}, "rerun python -m dpo_lab.tasks.summarization_sweep"
    assert sweep["generator_version"] == summ.GENERATOR_VERSION and sweep["split"] == "validation"
    assert sweep["n_validation_reviews"] == cfg["n_eval_docs"]
    assert {(r["lr"], r["beta"]) for r in sweep["runs"]} == {(lr, b) for lr in LEARNING_RATES for b in BETAS}
    for r in sweep["runs"]:  # the saved score is the mean of the saved win rates
        assert r["score"] == pytest.approx(np.mean([r["win_rate_vs_sft"][str(t)] for t in TEMPERATURES]))
    best = choose(sweep["runs"])
    assert sweep["chosen"] == {"lr": best["lr"], "beta": best["beta"]}
    # the notebook trains and reports the chosen setting
    assert (cfg["dpo_lr"], cfg["headline_beta"]) == (best["lr"], best["beta"]) and cfg["headline_beta"] in cfg["betas"]


def test_choose_takes_the_highest_validation_score_and_the_first_of_equals():
    from dpo_lab.tasks.summarization_sweep import choose

    runs = [{"lr": 1, "beta": 1, "score": 0.6}, {"lr": 2, "beta": 1, "score": 0.7}, {"lr": 3, "beta": 1, "score": 0.7}]
    assert choose(runs)["lr"] == 2
    with pytest.raises(ValueError, match="at least one run"):
        choose([])
