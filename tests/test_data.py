"""Preference records: each kind of bad record gets an error naming file, line and field."""

import json

import pytest

from dpo_lab.data import (
    SAMPLE_PATH,
    PreferenceDataError,
    from_dataset,
    load_hub_preferences,
    load_jsonl,
    make_sample_preferences,
    save_jsonl,
)

GOOD = {"prompt": "Review: The film", "chosen": " was fun.", "rejected": " was dull."}


def write_lines(tmp_path, lines, name="prefs.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_good_file_loads(tmp_path):
    path = write_lines(tmp_path, [json.dumps(GOOD).encode(), b"", json.dumps(GOOD).encode()])
    assert load_jsonl(path) == [GOOD, GOOD]


@pytest.mark.parametrize("bad, pattern", [
    ({"prompt": "x", "chosen": " a"}, r"line 2: field 'rejected' is missing"),
    ({"prompt": "x", "chosen": 3, "rejected": " b"}, r"line 2: field 'chosen' must be a string, got int"),
    ({"prompt": "x", "chosen": None, "rejected": " b"}, r"line 2: field 'chosen' must be a string, got NoneType"),
    ({"prompt": "  ", "chosen": " a", "rejected": " b"}, r"line 2: field 'prompt' is empty"),
    ({"prompt": "x", "chosen": " same", "rejected": " same"}, r"line 2: field 'rejected' is identical to 'chosen'"),
    (["x", " a", " b"], r"line 2: expected a JSON object, got list"),
])
def test_bad_records(tmp_path, bad, pattern):
    path = write_lines(tmp_path, [json.dumps(GOOD).encode(), json.dumps(bad).encode()])
    with pytest.raises(PreferenceDataError, match=pattern) as err:
        load_jsonl(path)
    assert str(path) in str(err.value)


def test_invalid_json(tmp_path):
    path = write_lines(tmp_path, [json.dumps(GOOD).encode(), b'{"prompt": "x",'])
    with pytest.raises(PreferenceDataError, match=r"line 2: not valid JSON"):
        load_jsonl(path)


def test_undecodable_line(tmp_path):
    path = write_lines(tmp_path, [json.dumps(GOOD).encode(), json.dumps(GOOD).encode(), b'{"prompt": "\xff\xfe"}'])
    with pytest.raises(PreferenceDataError, match=r"line 3: not valid UTF-8"):
        load_jsonl(path)


def test_from_dataset():
    import datasets

    ds = datasets.Dataset.from_list([GOOD, {**GOOD, "rejected": GOOD["chosen"]}])
    with pytest.raises(PreferenceDataError, match=r"row 2: field 'rejected' is identical"):
        from_dataset(ds)
    assert from_dataset(ds.select([0])) == [GOOD]


def test_tldr_preference_layout(tmp_path):
    """trl-lib/tldr-preference: prompt/chosen/rejected columns, read from a local Parquet file."""
    import datasets

    rows = [{"prompt": "SUBREDDIT: r/cats\nPOST: my cat...\nTL;DR:", "chosen": " cat is fine",
             "rejected": " dog"}]
    folder = tmp_path / "tldr-preference" / "data"
    folder.mkdir(parents=True)
    datasets.Dataset.from_list(rows).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    got = load_hub_preferences(str(tmp_path / "tldr-preference"), mapping="trl-lib/tldr-preference")
    assert got == rows


def summarize_row(choice):
    return {"info": {"id": "t3_1", "post": "My landlord raised the rent twice.", "title": "Rent help",
                     "subreddit": "legaladvice", "article": None, "site": None},
            "split": "train",
            "summaries": [{"text": "Landlord raised rent twice, is that legal?", "policy": "a", "note": None},
                          {"text": "rent", "policy": "b", "note": None}],
            "choice": choice, "worker": "w1", "batch": "b1", "extra": {"confidence": None}}


def test_summarize_from_feedback_layout(tmp_path):
    """openai/summarize_from_feedback comparisons: `choice` picks the chosen summary."""
    path = tmp_path / "comparisons.jsonl"
    path.write_text("\n".join(json.dumps(summarize_row(c)) for c in (0, 1)) + "\n")
    got = load_hub_preferences(str(path), mapping="openai/summarize_from_feedback")
    assert got[0]["chosen"] == " Landlord raised rent twice, is that legal?" and got[0]["rejected"] == " rent"
    assert got[1]["chosen"] == " rent"
    assert got[0]["prompt"] == ("SUBREDDIT: r/legaladvice\nTITLE: Rent help\n"
                                "POST: My landlord raised the rent twice.\nTL;DR:")


def test_hub_mapping_errors_name_the_row(tmp_path):
    bad = summarize_row(0)
    del bad["summaries"]
    path = tmp_path / "comparisons.jsonl"
    path.write_text(json.dumps(summarize_row(0)) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(PreferenceDataError, match=r"row 2: field 'summaries' is missing"):
        load_hub_preferences(str(path), mapping="openai/summarize_from_feedback")
    with pytest.raises(ValueError, match="no schema mapping"):
        load_hub_preferences(str(path))


def test_sample_file_is_reproducible(tmp_path):
    rebuilt = save_jsonl(make_sample_preferences(), tmp_path / "s.jsonl")
    assert rebuilt.read_bytes() == SAMPLE_PATH.read_bytes()
    assert len(load_jsonl(SAMPLE_PATH)) == 64
