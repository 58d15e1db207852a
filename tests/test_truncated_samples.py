"""A sample cut off by ``max_new_tokens`` is no finished completion: pairs mark it, and it trains
without the EOS the model never produced (``dpo_lab.collate``'s convention)."""

import numpy as np
import pytest

from dpo_lab.collate import encode_pairs
from dpo_lab.data import PreferenceDataError, validate_record
from dpo_lab.evaluate import sample
from dpo_lab.tasks import code, moderation, sentiment, summarization
from dpo_lab.train import precompute_ref_logps


def test_sample_marks_the_completions_max_new_tokens_cut_off(tiny_model, tokenizer):
    cut = sample(tiny_model, tokenizer, ["The film"] * 8, max_new_tokens=2, seed=0)
    long = sample(tiny_model, tokenizer, ["The film"] * 8, max_new_tokens=64, seed=0)
    for s in (cut, long):
        assert s.truncated == [ids[-1] != tokenizer.eos_token_id for ids in s.completion_ids]
    assert all(len(ids) == 2 for ids, t in zip(cut.completion_ids, cut.truncated) if t)
    assert sum(cut.truncated) > sum(long.truncated)  # a shorter budget cuts more samples


def test_a_truncated_completion_is_encoded_without_eos(tokenizer, tiny_model):
    records = [{"prompt": "The film", "chosen": " was a delight", "rejected": " was dull",
                "chosen_truncated": True},
               {"prompt": "The film", "chosen": " was a delight", "rejected": " was dull"}]
    chosen, rejected, report = encode_pairs(tokenizer, records, verbose=False)
    eos = tokenizer.eos_token_id
    assert chosen[0][1][-1] != eos and chosen[0][1] + [eos] == chosen[1][1]  # the same text, one EOS fewer
    assert rejected[0][1][-1] == eos and rejected[1][1][-1] == eos
    assert report.unended == 1 and "1 of 4 completions were cut off by sampling" in str(report)
    # the log-prob of the truncated one leaves out log p(EOS), so it is higher
    ref_c, _ = precompute_ref_logps(tiny_model, tokenizer, chosen, rejected)
    assert ref_c[0] > ref_c[1]


def test_validate_record_keeps_the_flags_and_checks_them():
    base = {"prompt": "p", "chosen": " a", "rejected": " b"}
    assert validate_record(dict(base, chosen_truncated=True), "here") == dict(base, chosen_truncated=True)
    assert validate_record(dict(base, extra=1), "here") == base
    with pytest.raises(PreferenceDataError, match="here: field 'rejected_truncated' must be true or false"):
        validate_record(dict(base, rejected_truncated="yes"), "here")


def test_the_pair_builders_carry_the_flags():
    pairs, skipped = sentiment.preference_pairs(["p"] * 3, [" a", " b", " c"], [0.1, 0.9, 0.5], 3,
                                                truncated=[True, False, False])
    assert skipped == 0 and pairs[0]["chosen"] == " b" and pairs[0]["rejected"] == " a"
    assert (pairs[0]["chosen_truncated"], pairs[0]["rejected_truncated"]) == (False, True)

    # the flags follow the summaries whichever one the annotator picks
    pairs, report = summarization.annotate(["p", "q"], [" a b", " c"], [" d", " e f"],
                                           lambda texts: np.zeros(len(texts)), 1e-3, length_bonus=1.0,
                                           truncated=([True, False], [False, True]))
    assert [(p["chosen"], p["chosen_truncated"], p["rejected_truncated"]) for p in pairs] == \
        [(" a b", True, False), (" e f", True, False)]
    assert report["truncated_summaries"] == 2

    task = {"task_id": "t", "prompt": "def f():\n"}
    pairs = code.execution_pairs([task] * 2, ["    return 1\n", "    return"], np.array([1.0, 0.0]),
                                 truncated=[False, True])
    assert (pairs[0]["chosen_truncated"], pairs[0]["rejected_truncated"]) == (False, True)


def test_moderation_skips_a_verdict_cut_off_before_its_line_ended():
    scam = {"text": "can you return the 20", "label": "flag", "annotated_label": "flag", "noisy": False,
            "verdict": "FLAG scam: the sender did not pay", "annotated_verdict": "FLAG scam: the sender did not pay",
            "lookalike": "ALLOW: the sender paid for it", "thread": "tom : I paid", "sender": "sam"}
    own = [[" ALLOW: the sender pa", " ALLOW: fine\nmore"]]
    pairs, report = moderation.build_pairs([scam], own, "both", truncated=[[True, True]])
    assert pairs[0]["rejected"] == " ALLOW: fine" and report["cut_off"] == 1
    pairs, report = moderation.build_pairs([scam], own, "both")  # without the flags both count as verdicts
    assert pairs[0]["rejected"] == " ALLOW: the sender pa" and report["cut_off"] == 0
