"""Preference data: the ``prompt`` / ``chosen`` / ``rejected`` schema, checked.

A preference record is a dict of three non-empty strings, the format TRL and the
Hugging Face Hub use::

    {"prompt": "Review: the film", "chosen": " was a delight.", "rejected": " was dull."}

``chosen`` is the completion the annotator preferred. Every loader here checks every
record and raises :class:`PreferenceDataError` naming the source, the line (or row)
and the field, instead of silently dropping what it cannot use.

Loaders: :func:`load_jsonl` (files the course ships), :func:`from_dataset` (a
``datasets.Dataset`` already in the schema) and :func:`load_hub_preferences`, which
reads a Hub dataset (or a local copy in the Hub's layout) and maps its own schema to
ours with one of :data:`HUB_MAPPINGS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from dpo_lab.paths import data_path

FIELDS = ("prompt", "chosen", "rejected")
#: optional: true for a completion sampled until ``max_new_tokens`` ran out, so it has no EOS
TRUNCATION_FLAGS = ("chosen_truncated", "rejected_truncated")


class PreferenceDataError(ValueError):
    """A preference record is malformed; the message names where and which field."""


def validate_record(record, where: str) -> dict:
    """Check one record and return it as a plain ``{prompt, chosen, rejected}`` dict.

    ``where`` says where the record came from (``"prefs.jsonl, line 3"``) and is
    put at the start of every error message. The optional flags :data:`TRUNCATION_FLAGS`
    (a completion cut off by ``max_new_tokens``: it gets no EOS, see :mod:`dpo_lab.collate`)
    are kept when present and must be booleans.
    """
    if not isinstance(record, dict):
        raise PreferenceDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for field in FIELDS:
        if field not in record:
            raise PreferenceDataError(f"{where}: field '{field}' is missing")
        value = record[field]
        if not isinstance(value, str):
            raise PreferenceDataError(
                f"{where}: field '{field}' must be a string, got {type(value).__name__}"
            )
        if not value.strip():
            raise PreferenceDataError(f"{where}: field '{field}' is empty")
    if record["chosen"] == record["rejected"]:
        raise PreferenceDataError(f"{where}: field 'rejected' is identical to 'chosen'")
    for flag in TRUNCATION_FLAGS:
        if flag in record and not isinstance(record[flag], bool):
            raise PreferenceDataError(f"{where}: field '{flag}' must be true or false, got {record[flag]!r}")
    return {field: record[field] for field in FIELDS + TRUNCATION_FLAGS if field in record}


def validate_records(records: Iterable, source: str = "records") -> list[dict]:
    """Validate a list of records; errors name ``source`` and the 1-based row."""
    return [validate_record(r, f"{source}, row {i}") for i, r in enumerate(records, start=1)]


def load_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file of preference records, one JSON object a line.

    Blank lines are skipped; undecodable bytes, invalid JSON and bad records are
    errors naming the file, the 1-based line and (for bad records) the field.
    """
    path = Path(path)
    records = []
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            where = f"{path}, line {lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise PreferenceDataError(f"{where}: not valid UTF-8 ({err.reason} at byte {err.start})") from err
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise PreferenceDataError(f"{where}: not valid JSON ({err.msg}, column {err.colno})") from err
            records.append(validate_record(obj, where))
    return records


def save_jsonl(records: Iterable[dict], path: str | Path) -> Path:
    """Write records as JSONL (UTF-8, keys sorted, one per line) so files diff cleanly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
    return path


def from_dataset(dataset, source: str = "dataset") -> list[dict]:
    """Records from a ``datasets.Dataset`` (or any iterable of dicts) in our schema."""
    return validate_records(dataset, source)


# --- Hub schemas ---------------------------------------------------------------
# Each mapping turns one row of a Hub dataset into one of our records, or raises
# KeyError/TypeError that the loader reports with the row number.

def _field(row: dict, name: str):
    """``row[name]``, treating None as missing: a Dataset fills absent keys with None."""
    if row.get(name) is None:
        raise KeyError(name)
    return row[name]


def map_prompt_chosen_rejected(row: dict) -> dict:
    """Datasets already in our layout, e.g. ``trl-lib/tldr-preference``."""
    return {field: _field(row, field) for field in FIELDS}


def map_summarize_from_feedback(row: dict) -> dict:
    """``openai/summarize_from_feedback`` (config ``comparisons``).

    A row holds ``info.post`` (the Reddit post), two ``summaries`` with a ``text``
    each, and ``choice``, the index (0 or 1) of the summary the labeller preferred.
    The prompt follows the TL;DR format of the DPO paper.
    """
    info = _field(row, "info")
    post = info.get("post") or info.get("article") or ""
    title = info.get("title") or ""
    subreddit = info.get("subreddit") or ""
    choice = _field(row, "choice")
    if choice not in (0, 1):
        raise ValueError(f"'choice' must be 0 or 1, got {choice!r}")
    texts = [_field(s, "text") for s in _field(row, "summaries")]
    if len(texts) != 2:
        raise ValueError(f"expected 2 summaries, got {len(texts)}")
    prompt = f"SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}\nTL;DR:"
    return {"prompt": prompt, "chosen": " " + texts[choice].strip(), "rejected": " " + texts[1 - choice].strip()}


HUB_MAPPINGS: dict[str, Callable[[dict], dict]] = {
    "trl-lib/tldr-preference": map_prompt_chosen_rejected,
    "openai/summarize_from_feedback": map_summarize_from_feedback,
}


def map_records(rows: Iterable[dict], mapping: Callable[[dict], dict], source: str) -> list[dict]:
    """Apply a schema mapping row by row, validating each result.

    A row the mapping cannot read is an error naming the row and the missing
    field; nothing is dropped silently.
    """
    records = []
    for i, row in enumerate(rows, start=1):
        where = f"{source}, row {i}"
        try:
            mapped = mapping(row)
        except KeyError as err:
            raise PreferenceDataError(f"{where}: field {err} is missing") from err
        except (TypeError, ValueError, IndexError) as err:
            raise PreferenceDataError(f"{where}: cannot map row ({err})") from err
        records.append(validate_record(mapped, where))
    return records


#: how a local data file is read, by its suffix
LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def open_dataset(source: str | Path, split: str = "train", config: str | None = None):
    """One split of a data set as a ``datasets.Dataset``: the one way the course opens data.

    ``source`` is a local file (JSON, JSONL, Parquet or CSV: all its rows are the split), a local
    folder in the Hub's layout (``<config>/<split>-*.parquet``, as ``Dataset.to_parquet`` writes),
    or a Hub id (downloads; the ``full`` profile). The tests point every Hub id the notebooks use
    at local folders of the same layout, so this is the code path the full profile runs.
    """
    from dpo_lab.extras import require

    datasets = require("datasets")  # the `course` extra

    path = Path(source)
    if path.is_file():
        kind = LOCAL_FORMATS.get(path.suffix)
        if kind is None:
            raise ValueError(f"{path}: expected one of {sorted(LOCAL_FORMATS)}, got {path.suffix!r}")
        return datasets.load_dataset(kind, data_files={split: str(path)}, split=split)
    if path.is_dir():
        return datasets.load_dataset(str(path), data_dir=config, split=split)
    return datasets.load_dataset(str(source), config, split=split)


def load_hub_preferences(
    name_or_path: str,
    split: str = "train",
    mapping: str | Callable[[dict], dict] | None = None,
    config: str | None = None,
    limit: int | None = None,
    seed: int | None = 0,
) -> list[dict]:
    """Load a Hub preference dataset, or a local copy of it, and map it to our schema.

    ``name_or_path`` is a Hub id (``"trl-lib/tldr-preference"``, needs the network),
    a local folder in the Hub's layout, or a single JSON/JSONL/Parquet file. ``mapping``
    is a key of :data:`HUB_MAPPINGS` or a function; by default the Hub id picks it.
    The rows are shuffled with ``seed`` (``None`` keeps the file's order); ``limit`` then keeps
    the first rows only (for quick runs).
    """
    if mapping is None:
        if name_or_path not in HUB_MAPPINGS:
            raise ValueError(
                f"no schema mapping known for {name_or_path!r}; pass mapping= one of {sorted(HUB_MAPPINGS)} "
                "or a function"
            )
        mapping = name_or_path
    mapping_fn = HUB_MAPPINGS[mapping] if isinstance(mapping, str) else mapping

    ds = open_dataset(name_or_path, split, config)
    if seed is not None:
        ds = ds.shuffle(seed=seed)  # Hub splits may be sorted; a limit then takes a seeded sample
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    if len(ds) == 0:
        raise PreferenceDataError(f"{name_or_path} [{split}]: no rows (limit={limit})")
    return map_records(ds, mapping_fn, f"{name_or_path} [{split}]")


# --- the small sample file the course ships ------------------------------------

SAMPLE_PATH = data_path("sample_preferences.jsonl")  # shipped with the package (dpo_lab.paths)
_SUBJECTS = ["film", "movie", "story", "ending", "cast", "script", "soundtrack", "director"]
_GOOD = ["was a delight", "was wonderful", "moved me", "was brilliant", "felt fresh and funny"]
_BAD = ["was a bore", "was awful", "left me cold", "was a mess", "felt slow and dull"]


def make_sample_preferences(n: int = 64, seed: int = 0) -> list[dict]:
    """A seeded toy preference set: review openings, a positive (chosen) and a negative
    (rejected) continuation. Small on purpose: for notebook 00, tests and quick trials."""
    import random

    rng = random.Random(seed)
    records = []
    for _ in range(n):
        subject = rng.choice(_SUBJECTS)
        records.append({
            "prompt": f"Review: The {subject}",
            "chosen": f" {rng.choice(_GOOD)}.",
            "rejected": f" {rng.choice(_BAD)}.",
        })
    return records


if __name__ == "__main__":
    # Rebuild data/sample_preferences.jsonl bit for bit: python -m dpo_lab.data
    print(f"wrote {save_jsonl(make_sample_preferences(), SAMPLE_PATH)}")
