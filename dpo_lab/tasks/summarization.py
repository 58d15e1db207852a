"""Summarization: the TL;DR experiment of the DPO paper, at course scale.

A policy reads a document and writes a short summary after ``TL;DR:``; annotators
compared pairs of summaries (Stiennon et al., 2020; Rafailov et al., 2023, section 6.2).

Two sources, one format (a prompt ending in ``"\\nTL;DR:"``, a completion starting with a space,
as in ``trl-lib/tldr``):

* ``tiny``: movie reviews to summarise, from :func:`generate_documents`, a seeded
  generator (shipped as ``data/summarization_docs.jsonl``). Each review has four **key
  facts** (the reviewer's verdict on three aspects of the film in the first sentence, and
  whether they recommend it in the last), **supporting detail** (when, with whom) and
  **distractors** (a friend's verdict, another film's) in shuffled order between them, and a
  reference summary written
  the way people write them (it may leave out a key fact or add the friend's view). Its
  :class:`GoldSummaryReward` is exact, and simulated annotators (:func:`annotate`) label
  pairs of summaries from it with Bradley-Terry noise, so their labels disagree with the
  gold reward some of the time, as human labels do. (The words are ones the course's small
  tokenizer knows, so a two-layer model can learn to copy them.)
* ``full``: Reddit TL;DR posts (``trl-lib/tldr`` for SFT, ``trl-lib/tldr-preference`` for the
  human comparisons) and a judge reward model from the Hub trained on the same human data
  (:class:`JudgeReward`).

The gold reward of the tiny profile, for a summary s of a review d:

    R(s) = covered(s) / 4  -  hallucination_cost * hallucinated(s)  -  length_cost * words(s)

A summary is read clause by clause (split at ``,``, ``;``, ``.`` and "and"); a clause
claims "the <aspect> was <adjective>" for every aspect and adjective it names.
``covered``: key facts of d that s states (a key aspect with its adjective in one clause;
the verdict as "recommend" or "not recommend"). ``hallucinated``: claims that no sentence
of d makes (an aspect paired with an adjective d never gave it), and a verdict that
contradicts d's, each counted once. Mentioning a distractor is not a hallucination (d says
it), but it covers nothing and costs words. :meth:`GoldSummaryReward.without_length`
drops the last term, so a notebook can show whether a method wins by writing longer.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np

from dpo_lab.paths import data_path
from dpo_lab.reward_model import HubScorer

DATA_PATH = data_path("summarization_docs.jsonl")  # shipped with the package (dpo_lab.paths)
GENERATOR_VERSION = 1  # bump when the generator changes; it is part of the runs/ cache key
SEPARATOR = "\nTL;DR:"  # ends every prompt, as in trl-lib/tldr
N_DOCUMENTS = 3000
# validation: where notebook 05's knobs are chosen (dpo_lab.tasks.summarization_sweep); test: its final numbers,
# read once. (Until #21 the notebook was tuned on the first 200 test reviews: those are now validation.)
SPLITS = {"sft": (0, 1500), "preference": (1500, 2600), "validation": (2600, 2800), "test": (2800, 3000)}
#: the simulated annotators' bonus a word (see :func:`annotate`): human raters favour longer summaries
ANNOTATOR_LENGTH_BONUS = 0.1

# every word below is one token of the course tokenizer, so a tiny model can copy it
ASPECTS = ["plot", "acting", "cast", "director", "script", "soundtrack", "ending", "dialogue", "characters", "pacing",
           "visuals", "music", "story"]
POSITIVE = ["beautiful", "brilliant", "charming", "clever", "delightful", "enjoyable", "excellent", "fantastic",
            "fresh", "funny", "gripping", "memorable", "moving", "perfect", "powerful", "strong", "stunning", "superb",
            "touching", "wonderful", "great", "good"]
NEGATIVE = ["awful", "bad", "bland", "boring", "clumsy", "dreadful", "dull", "flat", "forgettable", "horrible",
            "lifeless", "messy", "painful", "poor", "predictable", "silly", "tedious", "terrible", "weak", "slow"]
ADJECTIVES = POSITIVE + NEGATIVE
OPENINGS = ["I watched this film last weekend.", "I saw this movie with my family.", "I watched this film on a "
            "rainy Sunday.", "I finally saw this film.", "We rented this movie.", "I went to see this film."]
SUPPORT = ["I went with my family.", "The theater was small.", "I read the book first.", "It was a long night.",
           "I saw the trailer last year.", "My friend and I went after lunch.", "It was a rainy Sunday."]
N_KEY_FACTS = 4


def _was(aspect: str) -> str:
    return "were" if aspect in ("characters", "visuals") else "was"


def make_document(rng: random.Random) -> dict:
    """One review: its text, its reference summary and the facts behind both.

    Key facts: the reviewer's verdicts on three aspects, all in the first sentence, and the
    recommendation in the last (yes when at least two of the three adjectives are positive).
    In between, in shuffled order: when they watched, a supporting detail, a friend's verdict
    on a fourth aspect and, in half the reviews, another film's verdict on a fifth (the
    distractors). The reference summaries are written the way hurried people write them:
    half leave out one aspect, a fifth leave out the recommendation, and a quarter add the
    friend's view. So they are good but not the best possible, as human TL;DRs are, and a
    policy can beat them.
    """
    aspects = rng.sample(ASPECTS, 5)
    adjectives = rng.sample(ADJECTIVES, 5)
    key = list(zip(aspects[:3], adjectives[:3]))
    recommend = sum(adj in POSITIVE for _, adj in key) >= 2
    (friend_aspect, friend_adj), (other_aspect, other_adj) = zip(aspects[3:], adjectives[3:])
    (a1, j1), (a2, j2), (a3, j3) = key
    first = (f"The {a1} {_was(a1)} {j1}, the {a2} {_was(a2)} {j2} and the {a3} {_was(a3)} {j3}.")
    middle = [rng.choice(OPENINGS), rng.choice(SUPPORT),
              f"My friend thought the {friend_aspect} {_was(friend_aspect)} {friend_adj}."]
    if rng.random() < 0.5:
        middle.append(f"Last year I saw a movie where the {other_aspect} {_was(other_aspect)} {other_adj}.")
    rng.shuffle(middle)
    verdict = "Overall, I would recommend it." if recommend else "Overall, I would not recommend it."
    text = " ".join([first, *middle, verdict])

    stated = [f"the {a} {_was(a)} {adj}" for a, adj in key]
    if rng.random() < 0.5:
        del stated[rng.randrange(3)]
    summary = ", ".join(stated[:-1]) + " and " + stated[-1]
    if rng.random() < 0.25:
        summary += f"; my friend found the {friend_aspect} {friend_adj}"
    if rng.random() >= 0.2:
        summary += "; would recommend" if recommend else "; would not recommend"
    return {"document": text, "summary": summary + ".",
            "key_facts": {"aspects": {a: adj for a, adj in key}, "recommend": recommend}}


def generate_documents(n: int = N_DOCUMENTS, seed: int = 0) -> list[dict]:
    """``n`` seeded reports ``{"document", "summary", "key_facts"}``."""
    rng = random.Random(seed)
    return [make_document(rng) for _ in range(n)]


def make_prompt(document: str) -> str:
    """The policy's prompt: the document, then ``"\\nTL;DR:"`` (the TL;DR format)."""
    return document + SEPARATOR


def write_documents(path: Path = DATA_PATH, n: int = N_DOCUMENTS, seed: int = 0) -> Path:
    """Rebuild ``data/summarization_docs.jsonl`` bit for bit."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in generate_documents(n, seed):
            handle.write(json.dumps(record, sort_keys=True) + "\n")
    return path


def load_documents(split: str, path: Path | str = DATA_PATH, limit: int | None = None) -> list[dict]:
    """Records of one split of the shipped file (``"sft"``, ``"preference"``, ``"validation"`` or ``"test"``).

    Each record gets ``prompt`` (see :func:`make_prompt`) and ``reference`` (the summary with
    its leading space, ready to be a completion). A malformed line is an error naming it.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    lo, hi = SPLITS[split]
    records = []
    with Path(path).open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not lo < line_no <= hi:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {line_no}: not valid JSON ({err.msg})") from None
            for field in ("document", "summary", "key_facts"):
                if field not in row:
                    raise ValueError(f"{path}, line {line_no}: missing field {field!r}")
            records.append({**row, "prompt": make_prompt(row["document"]), "reference": " " + row["summary"]})
    return records[:limit] if limit is not None else records


def load_tldr(source: str = "trl-lib/tldr", split: str = "train", limit: int | None = None,
              seed: int = 0) -> list[dict]:
    """Posts and reference summaries in ``trl-lib/tldr``'s schema (``prompt``, ``completion``).

    ``source`` is a Hub id (needs the network) or a local JSON/Parquet file or folder in
    that schema. Returns records with ``prompt`` and ``reference``, like :func:`load_documents`.
    The split is shuffled with ``seed`` before ``limit`` takes a prefix.
    """
    from dpo_lab.data import open_dataset

    ds = open_dataset(source, split)
    missing = {"prompt", "completion"} - set(ds.column_names)
    if missing:
        raise ValueError(f"{source} [{split}] has columns {ds.column_names}; missing {sorted(missing)}")
    ds = ds.shuffle(seed=seed)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    if len(ds) == 0:
        raise ValueError(f"no posts: {source} [{split}] gave 0 rows (limit={limit})")
    return [{"prompt": row["prompt"], "reference": row["completion"]} for row in ds]


def load_split(source: str, split: str, limit: int | None = None, seed: int = 0) -> list[dict]:
    """Records with ``prompt`` and ``reference`` from either profile's source.

    ``source="generated"``: the shipped reviews (splits ``sft``, ``preference``, ``validation``,
    ``test``); otherwise a ``trl-lib/tldr``-style dataset, where ``sft`` reads ``train``,
    ``validation`` reads ``validation`` and ``test`` reads ``test``.
    """
    if source == "generated":
        return load_documents(split, limit=limit)
    hub_split = {"sft": "train", "preference": "train"}.get(split, split)
    return load_tldr(source, hub_split, limit, seed=seed)


def sft_model(cfg: dict, tokenizer, progress: bool = True, device=None):
    """The SFT model of a config: trained on reference summaries, or loaded from ``runs/``.

    It trains on ``device`` (by default :func:`dpo_lab.env.get_device`), the device it will
    be used on, and a cached model is loaded onto it; dropout is off either way.

    ``cfg`` keys: ``model`` ("tiny" or a Hub id/folder), ``model_sizes`` (tiny only),
    ``documents`` (a :func:`load_split` source), ``n_sft_docs``, ``sft_epochs``, ``sft_lr``,
    ``sft_batch_size``, ``max_length``, ``seed``. Returns ``(model, folder, history)``;
    ``history`` is ``None`` when the model came from the cache.
    """
    from dpo_lab.train import cached_sft

    keys = ["model", "model_sizes", "documents", "n_sft_docs", "sft_epochs", "sft_lr", "sft_batch_size",
            "max_length", "seed"]

    def examples():  # the article as prompt, its reference summary as completion
        docs = load_split(cfg["documents"], "sft", cfg["n_sft_docs"], seed=cfg["seed"])
        return [d["prompt"] for d in docs], [d["reference"] for d in docs]

    spec = {**{k: cfg.get(k) for k in keys}, "task": "summarization", "generator": GENERATOR_VERSION}
    return cached_sft("summarization-sft", spec, cfg, tokenizer, examples, device=device, progress=progress)


# --- the gold reward ----------------------------------------------------------------
_WORD = re.compile(r"[A-Za-z0-9']+")
_CLAUSE = re.compile(r"[,;.!?]|\band\b|\bbut\b")


def words(text: str) -> list[str]:
    """The words of a text (letters, digits, apostrophes), the unit of the length penalty."""
    return _WORD.findall(text)


def claims(text: str) -> set[tuple[str, str]]:
    """The (aspect, adjective) claims of a text: every aspect with every adjective of the same clause."""
    out = set()
    for clause in _CLAUSE.split(text.lower()):
        clause_words = words(clause)
        out |= {(a, adj) for a in clause_words if a in ASPECTS for adj in clause_words if adj in ADJECTIVES}
    return out


def verdict(text: str) -> bool | None:
    """True for "recommend", False for "not recommend" (a negation within two words before), None if absent."""
    said = [w.lower() for w in words(text)]
    if "recommend" not in said:
        return None
    i = said.index("recommend")
    return not any(w in ("not", "never", "don't", "wouldn't") for w in said[max(0, i - 2):i])


def fact_report(document: str, key_facts: dict, summary: str) -> dict:
    """What a summary gets right and wrong about its review: the parts of the gold reward.

    Returns ``covered`` (key facts stated, 0..4), ``hallucinated`` (claims the review does
    not make, plus a contradicted verdict), ``words``, and the hallucinated claims.
    """
    made, supported = claims(summary), claims(document)
    key = set(key_facts["aspects"].items())
    said_verdict = verdict(summary)
    covered = len(made & key) + int(said_verdict == key_facts["recommend"])
    wrong = sorted(made - supported)
    if said_verdict is not None and said_verdict != key_facts["recommend"]:
        wrong.append(("verdict", "recommend" if said_verdict else "not recommend"))
    return {"covered": covered, "hallucinated": len(wrong), "hallucinated_claims": wrong,
            "words": len(words(summary))}


class GoldSummaryReward:
    """The exact gold reward of the tiny profile (see the module docstring).

    Called on ``prompt + completion`` texts (the interface of every reward in the course),
    it finds the document before ``"\\nTL;DR:"`` and looks up its key facts among the
    ``documents`` it was given. ``length_cost=0`` gives the reward without its length penalty.
    """

    def __init__(self, documents: list[dict], hallucination_cost: float = 0.5, length_cost: float = 0.02):
        self.facts = {d["document"]: d["key_facts"] for d in documents}
        self.hallucination_cost, self.length_cost = hallucination_cost, length_cost
        self.name = f"gold-h{hallucination_cost}-l{length_cost}"

    def split(self, text: str) -> tuple[str, str]:
        """``(document, summary)`` of a prompt + completion text."""
        document, sep, summary = text.partition(SEPARATOR)
        if not sep:
            raise ValueError(f"no {SEPARATOR!r} in the text to score: {text[:80]!r}...")
        if document not in self.facts:
            raise KeyError(f"the gold reward does not know this document: {document[:80]!r}...")
        return document, summary

    def reports(self, texts: list[str]) -> list[dict]:
        out = []
        for text in texts:
            document, summary = self.split(text)
            out.append(fact_report(document, self.facts[document], summary))
        return out

    def score(self, report: dict, length_cost: float | None = None) -> float:
        length_cost = self.length_cost if length_cost is None else length_cost
        return (report["covered"] / N_KEY_FACTS - self.hallucination_cost * report["hallucinated"]
                - length_cost * report["words"])

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.array([self.score(r) for r in self.reports(texts)])

    def without_length(self, texts: list[str]) -> np.ndarray:
        """The gold reward with its length penalty removed: coverage minus hallucinations."""
        return np.array([self.score(r, length_cost=0.0) for r in self.reports(texts)])


# --- simulated annotators -----------------------------------------------------------

def annotate(prompts: list[str], first: list[str], second: list[str], reward_fn, temperature: float,
             seed: int = 0, length_bonus: float = 0.0, truncated: tuple[list[bool], list[bool]] | None = None
             ) -> tuple[list[dict], dict]:
    """Label pairs of summaries as a noisy annotator would: Bradley-Terry on the annotator's utility.

    The annotator's utility is the gold reward plus a bonus a word, U(s) = R(s) + length_bonus * words(s)
    (``length_bonus=0``: the gold reward itself). For summaries a and b of the same prompt the
    annotator prefers a with probability

        P(a > b) = sigmoid((U(a) - U(b)) / temperature)

    (Bradley & Terry, 1952), so near ties are coin flips and clear differences are almost
    always labelled right. Human raters favour longer summaries (Stiennon et al., 2020), and
    a bonus a word larger than the gold reward's length cost gives the annotators that bias: a
    policy trained on their labels can learn to write longer while the gold reward pays less.
    Identical summaries get no label (they are counted, not hidden).
    ``truncated``: for ``first`` and for ``second``, which summaries were sampled until
    ``max_new_tokens`` ran out (:attr:`dpo_lab.evaluate.Samples.truncated`); the pairs carry them as
    ``chosen_truncated``/``rejected_truncated``, so those summaries train without EOS.
    Returns the pairs (``prompt``/``chosen``/``rejected`` with ``chosen_gold``/``rejected_gold``)
    and a report: pairs, summaries in them cut off by sampling, identical pairs skipped, the share
    of labels that disagree with the gold reward (ties in the gold reward excluded), and the share
    of labels that chose the longer summary (pairs of equal length excluded).
    """
    if not len(prompts) == len(first) == len(second):
        raise ValueError(f"annotate needs as many prompts as summaries: {len(prompts)}, {len(first)}, {len(second)}")
    if temperature <= 0:
        raise ValueError(f"the annotator temperature must be > 0, got {temperature}")
    rng = np.random.default_rng(seed)
    r_a = np.asarray(reward_fn([p + a for p, a in zip(prompts, first)]), dtype=float)
    r_b = np.asarray(reward_fn([p + b for p, b in zip(prompts, second)]), dtype=float)
    n_a = np.array([len(words(a)) for a in first])
    n_b = np.array([len(words(b)) for b in second])
    u_diff = (r_a - r_b) + length_bonus * (n_a - n_b)  # the annotator's utility difference
    p_first = np.exp(-np.logaddexp(0.0, -u_diff / temperature))  # sigmoid, without overflow
    draws = rng.random(len(prompts))
    cut_a, cut_b = truncated if truncated is not None else ([False] * len(first), [False] * len(second))
    pairs, identical, disagree, decided, longer, unequal = [], 0, 0, 0, 0, 0
    for i, prompt in enumerate(prompts):
        if first[i] == second[i]:
            identical += 1
            continue
        a_wins = draws[i] < p_first[i]
        chosen, rejected = (first[i], second[i]) if a_wins else (second[i], first[i])
        r_c, r_r = (r_a[i], r_b[i]) if a_wins else (r_b[i], r_a[i])
        if r_c != r_r:
            decided += 1
            disagree += int(r_c < r_r)
        n_c, n_r = (n_a[i], n_b[i]) if a_wins else (n_b[i], n_a[i])
        if n_c != n_r:
            unequal += 1
            longer += int(n_c > n_r)
        cut_c, cut_r = (cut_a[i], cut_b[i]) if a_wins else (cut_b[i], cut_a[i])
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected,
                      "chosen_gold": float(r_c), "rejected_gold": float(r_r),
                      "chosen_truncated": bool(cut_c), "rejected_truncated": bool(cut_r)})
    report = {"pairs": len(pairs), "identical_skipped": identical,
              "truncated_summaries": sum(p["chosen_truncated"] + p["rejected_truncated"] for p in pairs),
              "gold_ties": len(pairs) - decided,
              "disagreement": disagree / decided if decided else 0.0, "disagreeing": disagree, "decided": decided,
              "longer_chosen": longer / unequal if unequal else 0.0, "unequal_length": unequal}
    return pairs, report


# --- the judge of the full profile --------------------------------------------------

class JudgeReward(HubScorer):
    """A reward model from the Hub as the judge of the full profile (a :class:`HubScorer`).

    Default: ``OpenAssistant/reward-model-deberta-v3-large-v2``, a DeBERTa-v3-large reward model
    trained on human comparisons that include OpenAI's summarize_from_feedback (the data
    behind ``trl-lib/tldr-preference``). It reads (question, answer) pairs, so the prompt and
    the summary (cut at the last ``TL;DR:``) go to its tokenizer as two segments.
    ``name_or_path`` may be a local folder in the Hub's layout (a ``save_pretrained`` sequence
    classifier with one label).
    """

    def __init__(self, name_or_path: str = "OpenAssistant/reward-model-deberta-v3-large-v2", device=None,
                 batch_size: int = 32, max_length: int = 512):
        super().__init__(name_or_path, separator=SEPARATOR, device=device, batch_size=batch_size,
                         max_length=max_length)


if __name__ == "__main__":
    # python -m dpo_lab.tasks.summarization   rebuilds data/summarization_docs.jsonl
    print(f"wrote {write_documents()}")
