"""Content moderation as text generation: read a message in its thread, write a verdict.

A policy reads a message (with its sender and the previous message of its thread) and
writes one line::

    FLAG <category>: <reason>      (category: phishing, scam or spam)
    ALLOW: <reason>

The domain is kept classroom-safe on purpose: spam, scams and phishing against ordinary
messages; no slurs, no graphic content. Two sources, one schema (a record is
``{"thread", "sender", "text", "label", "verdict", "category", "family", "subtype",
"relation", "hard", "annotated_label", "annotated_verdict", "noisy"}``; ``label`` is
``"flag"`` or ``"allow"``):

* ``tiny``: :func:`generate_messages`, a seeded generator (shipped as
  ``data/moderation_messages.jsonl``; rebuild with ``python -m dpo_lab.tasks.moderation``)
  built so that **the verdict depends on what a bag of words cannot see**. Three of its five
  families come in a harmful and a harmless form that use the same words:

  - ``domain``: an account notice from ``<org>.com`` with a link to ``<org2>.com``: phishing
    when the link's domain is not the sender's, a real notice when it is (the same tokens,
    matched or not);
  - ``order``: a notice with two instructions, "do not <verb> the <object>, <verb> the
    <object>": phishing when the risky object (the link, the numbers) is the one you are told
    to use, a real warning when it is the one after "do not" (the same words, in another order);
  - ``thread``: "can you return the 20 for the film?" after "tom: I paid for the film, it was
    20": a friend settling a cost when tom sends it, a scam when someone else does (the
    previous message of the thread decides).

  The other two are easy: ordinary messages and plain spam. The share of harmful messages is
  :data:`PREVALENCE` (a realistic minority), and a share :data:`NOISE_RATE` of the labels an
  annotator wrote are flipped: ``label``/``verdict`` are the true (noise-free) ones, used to
  score; ``annotated_label``/``annotated_verdict`` what a learner trains on; ``noisy`` marks
  the flips, so the two can be reported apart. Every word is one the course tokenizer knows
  (one token, or two or three for a few names and verbs: :func:`word_token_counts`).
* ``full``: the SMS Spam Collection (Almeida, Gomez Hidalgo & Yamakami, DocEng 2011) from
  the Hub, :data:`HUB_DATASET`, mapped by :func:`map_sms_spam`. It has only ham/spam
  labels, so its verdicts have one category (spam) and one fixed reason a class; it has no
  thread and no sender, and its prevalence is the collection's own (about 13% spam): no
  prevalence control, and its label noise is unknown (``noisy`` is False throughout).

Evaluation: :func:`parse_verdict` reads an output; an output it cannot read is *counted*
as unparseable, never dropped. :func:`flag_metrics` gives precision, recall and F1 for
FLAG (the positive class), the wrong verdicts and the unparseable outputs apart, and a
confusion matrix whose third column is the unparseable outputs: an unparseable answer on a
scam is a miss, on an ordinary message it is not a false flag.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dpo_lab.paths import data_path

DATA_PATH = data_path("moderation_messages.jsonl")  # shipped with the package (dpo_lab.paths)
GENERATOR_VERSION = 2  # bump when the generator changes (2: relations, prevalence, label noise)
N_MESSAGES = 2000
# the shipped file is one list; these are its splits (demonstrations, preference messages,
# validation for choosing hyper-parameters, held out for the headline numbers)
SPLITS = {"sft": (0, 600), "prefs": (600, 1100), "val": (1100, 1400), "test": (1400, 2000)}
# the Hub source has one split: shuffled with a seed and cut at these shares of its rows
HUB_SHARES = {"sft": (0.0, 0.35), "prefs": (0.35, 0.7), "val": (0.7, 0.8), "test": (0.8, 1.0)}
CATEGORIES = ("phishing", "scam", "spam")
PREVALENCE = 0.2  # share of harmful messages: most of a real queue is harmless
NOISE_RATE = 0.04  # share of annotated labels that are flipped (the annotator's mistakes)

# Hub source of the full profile (its licence: data/README.md, the data card)
HUB_DATASET = "ucirvine/sms_spam"
SMS_SPAM_VERDICTS = {"flag": "FLAG spam: unsolicited bulk message", "allow": "ALLOW: ordinary personal message"}

# --- the words: every one is a word the course tokenizer knows (see word_token_counts) -------
ORGS = ["city", "film", "music", "book", "flight", "theater", "movie", "company"]
PEOPLE = ["tom", "max", "sam", "leo", "ben"]
EVENTS = ["film", "movie", "lunch", "flight", "theater", "music"]
AMOUNTS = ["10", "12", "15", "20", "25", "30"]
WHEN = ["today", "this week", "tomorrow", "on Sunday", "after the weekend", "next week"]
PATHS = ["verify", "update", "account", "report"]
RISKY = ["link", "numbers"]  # what a phisher wants you to use
SAFE = ["report", "review", "update"]
VERBS = ["open", "read", "see", "return"]  # drawn independently of the objects: no verb gives the label away

ORDINARY = (
    "are we still meeting for lunch tomorrow ?",
    "thanks for the update , see you next week .",
    "the film was great , we loved the music .",
    "I will be at the office after lunch .",
    "the flight is at night , see you on Sunday .",
    "I read the book , the ending was really good .",
    "we watched the movie last night , it was funny .",
    "the meeting is still on for next week .",
    "here is the link to the review : {org}.com/review",
    "I paid for the {event} , see you there {when} .",
)
# the previous message of an ordinary thread (often none); money and names appear here too
PRIOR = ("the {event} was great last night .", "see you at the office tomorrow .",
         "thanks for lunch , it was really good .", "I paid for the {event} , it was {amount} .")
SPAM = ("new this week : the best {event} of the year for a small total ! open {org}.com/deal now .",
        "great value ! the best {event} of the year , see {org}.com/deal this weekend .",
        "new this weekend : a {event} for {amount} . open {org}.com/deal {when} !")
DOMAIN = ("Your account has been suspended . Click the link to verify it {when} : {dom}.com/{path}",
          "Your {org} account update is ready . read it {when} at {dom}.com/{path}",
          "This is the {org} office . Your account is open , see {dom}.com/{path} {when} .",
          "Your {org} account has a new report . see it at {dom}.com/{path} {when} .")
ORDER = ("the {org} office says : do not {v1} the {o1} in this message , {v2} the {o2} in this message .",
         "This is the {org} office : do not {v1} the {o1} now , {v2} the {o2} now .")
THREAD = ("can you return the {amount} for the {event} {when} ?",
          "I still need the {amount} for the {event} , can you return it {when} ?")

# the gold verdict of each family and side: (harmful, harmless)
VERDICTS = {
    "ordinary": (None, "ALLOW: a friend's message"),
    "spam": ("FLAG spam: it is an ad", None),
    "domain": ("FLAG phishing: link not from the sender", "ALLOW: the link is the sender's"),
    "order": ("FLAG phishing: it asks you to use the {risky}", "ALLOW: it says not to use the {risky}"),
    "thread": ("FLAG scam: the sender did not pay", "ALLOW: the sender paid for it"),
}
RELATION = {"ordinary": "none", "spam": "none", "domain": "domain", "order": "order", "thread": "thread"}
# the mix of families within each label (harmful messages, harmless messages)
FLAG_FAMILIES = {"spam": 0.2, "domain": 0.3, "order": 0.25, "thread": 0.25}
ALLOW_FAMILIES = {"ordinary": 0.55, "domain": 0.15, "order": 0.15, "thread": 0.15}


def _message(rng: random.Random, family: str, harmful: bool) -> dict:
    """One message of ``family``, harmful or not: thread, sender, text and the gold verdict."""
    org, event, amount, when = rng.choice(ORGS), rng.choice(EVENTS), rng.choice(AMOUNTS), rng.choice(WHEN)
    thread, fill = "None", {}
    if family == "ordinary":
        sender = rng.choice(PEOPLE)
        if rng.random() < 0.5:  # a previous message from anyone: a thread alone says nothing
            prior = rng.choice(PRIOR).format(event=rng.choice(EVENTS), amount=rng.choice(AMOUNTS))
            thread = f"{rng.choice(PEOPLE)} : {prior}"
        text = rng.choice(ORDINARY).format(org=org, event=event, when=when)
    elif family == "spam":
        sender = f"{org}.com"
        text = rng.choice(SPAM).format(org=org, event=event, amount=amount, when=when)
    elif family == "domain":
        # the same words either way: only whether the link's domain equals the sender's differs
        sender = f"{org}.com"
        dom = rng.choice([o for o in ORGS if o != org]) if harmful else org
        text = rng.choice(DOMAIN).format(org=org, dom=dom, when=when, path=rng.choice(PATHS))
    elif family == "order":
        # the same words either way: only which object follows "do not" differs
        sender = f"{org}.com"
        risky, safe = rng.choice(RISKY), rng.choice(SAFE)
        first, second = (safe, risky) if harmful else (risky, safe)
        text = rng.choice(ORDER).format(org=org, v1=rng.choice(VERBS), v2=rng.choice(VERBS), o1=first, o2=second)
        fill = {"risky": risky}
    elif family == "thread":
        # the same words either way: only whether the sender is the one who paid differs
        payer = rng.choice(PEOPLE)
        sender = rng.choice([p for p in PEOPLE if p != payer]) if harmful else payer
        thread = f"{payer} : I paid for the {event} , it was {amount} ."
        text = rng.choice(THREAD).format(amount=amount, event=event, when=when)
    else:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(VERDICTS)}")
    verdict = VERDICTS[family][0 if harmful else 1].format(**fill)
    lookalike = VERDICTS[family][1 if harmful else 0]
    if lookalike is None:  # the easy families: the other side's plain verdict
        lookalike = VERDICTS["ordinary"][1] if harmful else VERDICTS["spam"][0]
    return {"thread": thread, "sender": sender, "text": text, "verdict": verdict,
            "lookalike": lookalike.format(**fill)}


def generate_messages(n: int = N_MESSAGES, seed: int = 0, prevalence: float = PREVALENCE,
                      noise_rate: float = NOISE_RATE) -> list[dict]:
    """``n`` seeded, distinct messages in their thread, a share ``prevalence`` of them harmful.

    Each message: draw harmful (probability ``prevalence``), then a family from
    :data:`FLAG_FAMILIES` or :data:`ALLOW_FAMILIES`, then its words; a repeat of an earlier
    (thread, sender, text) is drawn again with the same label, so no held-out message is also a
    training message and the prevalence stays as drawn. Then the annotator's copy of the label
    is flipped with probability ``noise_rate`` (its verdict becomes the family's other verdict).
    """
    if not 0 < prevalence < 1:
        raise ValueError(f"prevalence must be between 0 and 1, got {prevalence}")
    if not 0 <= noise_rate < 0.5:
        raise ValueError(f"noise_rate must be in [0, 0.5), got {noise_rate}")
    rng = random.Random(seed)
    records, seen = [], set()
    while len(records) < n:
        harmful = rng.random() < prevalence
        families = FLAG_FAMILIES if harmful else ALLOW_FAMILIES
        while True:
            family = rng.choices(list(families), weights=list(families.values()))[0]
            msg = _message(rng, family, harmful)
            key = (msg["thread"], msg["sender"], msg["text"])
            if key not in seen:
                break
        seen.add(key)
        noisy = rng.random() < noise_rate
        label = "flag" if harmful else "allow"
        verdict = msg["verdict"]
        records.append({
            "thread": msg["thread"], "sender": msg["sender"], "text": msg["text"],
            "label": label, "verdict": verdict, "category": parse_verdict(verdict).category or "none",
            "family": family, "subtype": f"{family}_{label}", "relation": RELATION[family],
            "hard": RELATION[family] != "none",
            "annotated_label": ("allow" if harmful else "flag") if noisy else label,
            "annotated_verdict": msg["lookalike"] if noisy else verdict, "noisy": noisy,
            "lookalike": msg["lookalike"],
        })
    return records


def write_messages(path: Path = DATA_PATH, n: int = N_MESSAGES, seed: int = 0) -> Path:
    """Rebuild ``data/moderation_messages.jsonl`` bit for bit."""
    from dpo_lab.data import save_jsonl

    return save_jsonl(generate_messages(n, seed), path)


def word_token_counts(tokenizer, texts: list[str]) -> dict[str, int]:
    """Tokens each distinct word of ``texts`` takes (encoded with its leading space, as in a sentence).

    Words are the space-separated pieces with punctuation, ``.com/...`` and ``'s`` cut off, so this
    measures how well the course tokenizer knows the *words* of the generated text.
    """
    words = set()
    for text in texts:
        for piece in text.split():
            word = re.sub(r"(\.com.*|'s)$", "", piece).strip(".,:;!?/'")  # "city.com/x", "sender's": the word
            if word:
                words.add(word)
    return {w: len(tokenizer.encode(" " + w, add_special_tokens=False)) for w in sorted(words)}


# --- prompts and verdicts -------------------------------------------------------------------

def to_prompt(message) -> str:
    """The policy's prompt: thread, sender and message, then ``Verdict:`` (the completion starts with a space).

    ``message`` is a record (its ``thread`` and ``sender`` lines are written when it has them;
    an SMS Spam record has neither) or a bare message text.
    """
    if isinstance(message, str):
        message = {"text": message}
    lines = [f"{name}: {message[key]}" for name, key in (("Thread", "thread"), ("From", "sender"))
             if message.get(key) is not None]
    return "\n".join([*lines, f"Message: {message['text']}", "Verdict:"])


def to_completion(verdict: str) -> str:
    return " " + verdict


_FLAG = re.compile(r"^FLAG (\w+): (\S.*)$")
_ALLOW = re.compile(r"^ALLOW: (\S.*)$")


@dataclass(frozen=True)
class Verdict:
    """A parsed verdict; ``decision`` is ``"flag"``, ``"allow"`` or ``None`` (unparseable)."""

    decision: str | None
    category: str | None = None
    reason: str | None = None


def parse_verdict(text: str) -> Verdict:
    """Read the first line of an output as ``FLAG <category>: <reason>`` or ``ALLOW: <reason>``.

    Anything else (an unknown category, a missing reason, free text) is unparseable:
    ``Verdict(None)``. Surrounding spaces are ignored; case is not (the format is exact).
    """
    line = text.strip().split("\n", 1)[0].strip()
    m = _FLAG.match(line)
    if m and m.group(1) in CATEGORIES:
        return Verdict("flag", m.group(1), m.group(2).strip())
    m = _ALLOW.match(line)
    if m:
        return Verdict("allow", None, m.group(1).strip())
    return Verdict(None)


def verdict_is_correct(text: str, record: dict) -> bool:
    """The output agrees with the true label *and* names the actual problem (the gold verdict line)."""
    return text.strip().split("\n", 1)[0].strip() == record["verdict"]


# --- metrics --------------------------------------------------------------------------------

def flag_metrics(labels: list[str], outputs: list[str]) -> dict:
    """Precision, recall and F1 of FLAG, and the confusion matrix, from raw outputs.

    ``labels`` are ``"flag"``/``"allow"``; ``outputs`` the policy's texts. ``confusion`` is a
    2x3 matrix: rows true flag, true allow; columns predicted FLAG, ALLOW, unparseable.

        precision = TP / (TP + FP)      recall = TP / (number of true flags)
        F1 = 2 * precision * recall / (precision + recall)

    An unparseable output is counted (``unparseable``) and is neither a TP nor an FP: on a
    scam it lowers recall (a miss), on an ordinary message it does not lower precision.
    ``wrong`` counts the verdicts that parsed and decided wrongly, apart from the unparseable
    ones. A ratio with a zero denominator is 0.
    """
    if len(labels) != len(outputs):
        raise ValueError(f"{len(labels)} labels but {len(outputs)} outputs")
    bad = sorted({lab for lab in labels if lab not in ("flag", "allow")})
    if bad:
        raise ValueError(f"labels must be 'flag' or 'allow', got {bad}")
    column = {"flag": 0, "allow": 1, None: 2}
    confusion = np.zeros((2, 3), dtype=int)
    for label, out in zip(labels, outputs):
        confusion[0 if label == "flag" else 1, column[parse_verdict(out).decision]] += 1
    tp, fp = int(confusion[0, 0]), int(confusion[1, 0])
    n_flag = int(confusion[0].sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_flag if n_flag else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp,
            "missed": n_flag - tp, "false_flags": fp, "wrong": int(confusion[0, 1] + confusion[1, 0]),
            "unparseable": int(confusion[:, 2].sum()), "confusion": confusion}


def f1_from_decisions(is_flag, predicted_flag) -> float:
    """F1 of FLAG from two boolean arrays (truth, prediction): 2 TP / (2 TP + FP + FN).

    The same F1 as :func:`flag_metrics` (an unparseable output is a ``False`` prediction),
    written on arrays so that :func:`dpo_lab.stats.bootstrap_interval` can resample it.
    """
    is_flag, predicted_flag = np.asarray(is_flag, dtype=bool), np.asarray(predicted_flag, dtype=bool)
    tp = np.sum(is_flag & predicted_flag)
    denominator = 2 * tp + np.sum(~is_flag & predicted_flag) + np.sum(is_flag & ~predicted_flag)
    return float(2 * tp / denominator) if denominator else 0.0


def mistake_cost(metrics: dict, n: int, cost_missed: float = 10.0, cost_false_flag: float = 1.0) -> float:
    """Cost per 1,000 messages: ``cost_missed`` a scam let through, ``cost_false_flag`` a good message held."""
    return 1000.0 * (cost_missed * metrics["missed"] + cost_false_flag * metrics["false_flags"]) / n


# --- preference pairs -----------------------------------------------------------------------
PAIR_CONSTRUCTIONS = ("both", "misses", "false_flags")


def wrong_verdicts(record: dict) -> dict[str, str]:
    """Two kinds of wrong verdict for a record, for when the policy's own samples hold none.

    ``"decision"``: the lookalike verdict (the other side of the message's family: the miss
    of a scam, the false flag of a harmless lookalike). ``"reason"``: the same decision with
    another family's reason. Both are wrong against the *annotated* label, the only one a
    learner has.
    """
    label, verdict = record.get("annotated_label", record["label"]), record.get("annotated_verdict",
                                                                               record["verdict"])
    if "lookalike" not in record:  # a Hub record (SMS Spam Collection): the other class's verdict
        other = "allow" if label == "flag" else "flag"
        decision = SMS_SPAM_VERDICTS[other]
    else:
        flipped = record.get("noisy", False)  # the annotator's side is the other one: its lookalike is the gold
        decision = record["verdict"] if flipped else record["lookalike"]
    same_side = sorted({v.format(risky=RISKY[0]) for pair in VERDICTS.values() for v in pair
                        if v is not None and parse_verdict(v.format(risky=RISKY[0])).decision == label
                        and v.format(risky=RISKY[0]) != verdict})
    return {"decision": decision, "reason": same_side[hash_text(record["text"]) % len(same_side)]}


def hash_text(text: str) -> int:
    """A stable small hash (Python's ``hash`` of a string changes between runs)."""
    return sum((i + 1) * b for i, b in enumerate(text.encode("utf-8"))) % 1_000_003


def build_pairs(records: list[dict], samples: list[list[str]] | None = None, construction: str = "both",
                reason_pairs: bool = True, truncated: list[list[bool]] | None = None) -> tuple[list[dict], dict]:
    """Verdict preference pairs: chosen = the annotated verdict, rejected = a wrong one.

    The annotator's label is all a learner has, so "wrong" is judged against
    ``annotated_label`` (a flipped label makes a flipped pair: the label noise reaches DPO).
    ``samples[i]`` are the policy's own verdicts for ``records[i]`` (on-policy negatives);
    the rejected verdict is the first sample with a wrong *decision*, else (if
    ``reason_pairs``) the first with the right decision and a wrong reason, else a
    :func:`wrong_verdicts` stand-in with the wrong decision. ``construction`` picks the records:

    * ``"both"``: every record;
    * ``"misses"``: only messages annotated as harmful (teaches "do not let scams through");
    * ``"false_flags"``: only messages annotated as harmless (teaches "do not hold good messages").

    ``truncated[i]`` (optional, parallel to ``samples[i]``; :attr:`dpo_lab.evaluate.Samples.truncated`)
    marks samples cut off by ``max_new_tokens``: a cut sample whose first line never ended is not a
    finished verdict, so it is no candidate (counted as ``cut_off``, not silently dropped).

    Returns ``(pairs, report)``; the report counts where the rejected verdicts came from.
    """
    if construction not in PAIR_CONSTRUCTIONS:
        raise ValueError(f"construction must be one of {PAIR_CONSTRUCTIONS}, got {construction!r}")
    if samples is not None and len(samples) != len(records):
        raise ValueError(f"{len(records)} records but {len(samples)} sample lists")
    keep = {"both": ("flag", "allow"), "misses": ("flag",), "false_flags": ("allow",)}[construction]
    pairs, report = [], {"on_policy_decision": 0, "on_policy_reason": 0, "stand_in": 0, "cut_off": 0}
    for i, rec in enumerate(records):
        label = rec.get("annotated_label", rec["label"])
        chosen = rec.get("annotated_verdict", rec["verdict"])
        if label not in keep:
            continue
        own = samples[i] if samples is not None else []
        cut = truncated[i] if truncated is not None else [False] * len(own)
        # a verdict is the first line; a sample cut off before that line ended is no verdict
        finished = [t for t, c in zip(own, cut) if not (c and "\n" not in t.strip())]
        report["cut_off"] += len(own) - len(finished)
        first_lines = [t.strip().split("\n", 1)[0] for t in finished]
        wrong_decision = [t for t in first_lines if parse_verdict(t).decision not in (label, None)]
        wrong_reason = [t for t in first_lines if parse_verdict(t).decision == label and t != chosen]
        if wrong_decision:
            rejected, source = wrong_decision[0], "on_policy_decision"
        elif reason_pairs and wrong_reason:
            rejected, source = wrong_reason[0], "on_policy_reason"
        else:
            rejected, source = wrong_verdicts(rec)["decision"], "stand_in"
        report[source] += 1
        pairs.append({"prompt": to_prompt(rec), "chosen": to_completion(chosen),
                      "rejected": to_completion(rejected), "label": label})
    return pairs, report


# --- loading ---------------------------------------------------------------------------------

def map_sms_spam(row: dict) -> dict:
    """One row of ``ucirvine/sms_spam`` (``sms``: str, ``label``: 0 ham / 1 spam) to our record.

    ``label`` may also be the class name (``"ham"``/``"spam"``), as in a CSV or JSON export.
    An SMS has no thread and no sender (``None``), and its labels are taken as given
    (``annotated_label == label``, ``noisy`` False: the collection's own noise is unknown).
    """
    if row.get("sms") is None:
        raise KeyError("sms")
    if row.get("label") is None:
        raise KeyError("label")
    label = {0: "allow", 1: "flag", "ham": "allow", "spam": "flag"}.get(row["label"])
    if label is None:
        raise ValueError(f"'label' must be 0/1 or 'ham'/'spam', got {row['label']!r}")
    verdict = SMS_SPAM_VERDICTS[label]
    return {"thread": None, "sender": None, "text": str(row["sms"]).strip(), "label": label, "verdict": verdict,
            "category": "spam" if label == "flag" else "none", "family": "sms", "subtype": "sms_" + label,
            "relation": "none", "hard": False, "annotated_label": label, "annotated_verdict": verdict,
            "noisy": False}


def load_messages(source: str = "generated", split: str = "sft", limit: int | None = None,
                  seed: int = 0) -> list[dict]:
    """Records of one split (``"sft"``, ``"prefs"``, ``"val"`` or ``"test"``).

    ``"generated"`` reads the shipped file and cuts it by :data:`SPLITS`. Any other source
    is a Hub id (:data:`HUB_DATASET`) or a local file/folder in its schema, read with
    ``datasets``; its single ``train`` split is shuffled with ``seed`` and cut by
    :data:`HUB_SHARES` (35/35/10/20). A row that cannot be mapped is an error naming the
    source, the row and the field.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if source == "generated":
        import json

        with DATA_PATH.open(encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
        start, stop = SPLITS[split]
        records = records[start:stop]
    else:
        from dpo_lab.data import open_dataset

        ds = open_dataset(source, "train")  # SMS Spam has one split: ours are cut from it
        mapped = []
        for i, row in enumerate(ds, start=1):
            try:
                mapped.append(map_sms_spam(row))
            except KeyError as err:
                raise ValueError(f"{source}, row {i}: field {err} is missing") from err
            except ValueError as err:
                raise ValueError(f"{source}, row {i}: {err}") from err
        order = list(range(len(mapped)))
        random.Random(seed).shuffle(order)
        lo, hi = (round(share * len(order)) for share in HUB_SHARES[split])
        records = [mapped[i] for i in order[lo:hi]]
    records = records[:limit] if limit is not None else records
    if not records:
        raise ValueError(f"no messages: {source} split {split!r} is empty (limit={limit})")
    return records


def right_decisions_by(outputs: dict[str, list[str]], records: list[dict], key: str = "relation"):
    """Share of right flag/allow decisions (against the true label) per method and value of ``key``.

    Returns a DataFrame indexed by method, one column a value of ``record[key]`` (sorted); an
    unparseable verdict counts as a wrong decision here.
    """
    import pandas as pd

    rows = [{"method": name, key: r[key], "right decision": parse_verdict(out).decision == r["label"]}
            for name, outs in outputs.items() for out, r in zip(outs, records)]
    if not rows:
        raise ValueError("no outputs to score: every method's list of outputs is empty")
    return pd.DataFrame(rows).groupby(["method", key])["right decision"].mean().unstack()


def right_decisions_by_difficulty(outputs: dict[str, list[str]], records: list[dict]):
    """Share of right flag/allow decisions per method, on easy and on hard cases.

    Returns a DataFrame indexed by method with the columns ``easy`` and ``hard`` always
    present: a source with no hard cases (SMS Spam marks none) gets NaN under ``hard``.
    """
    table = right_decisions_by(outputs, records, key="hard")
    table = table.reindex(columns=[False, True])
    table.columns = ["easy", "hard"]
    return table


# --- the non-generative reference points ------------------------------------------------------

def fit_bow_classifier(texts: list[str], labels: list[str], seed: int = 0):
    """Logistic regression on word and word-pair counts (scikit-learn): the plain classifier.

    Returns a function ``texts -> list of verdict strings`` (``FLAG spam: ...``-shaped only in
    its decision: a binary classifier gives no category or reason), so the same
    :func:`flag_metrics` scores it. Feed it the whole prompt (:func:`to_prompt`: thread, sender
    and message) to give it what the policy reads.
    """
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    clf = make_pipeline(CountVectorizer(ngram_range=(1, 2), lowercase=True),
                        LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    clf.fit(texts, [lab == "flag" for lab in labels])

    def predict(new_texts: list[str]) -> list[str]:
        return ["FLAG spam: classifier score above 0.5" if p else "ALLOW: classifier score below 0.5"
                for p in clf.predict(new_texts)]

    predict.pipeline = clf
    return predict


def train_classifier_head(lm, tokenizer, texts: list[str], labels: list[str], *, steps: int, batch_size: int = 32,
                          lr: float = 3e-4, seed: int = 0, progress: bool = True, desc: str = "classifier head"):
    """A linear head on a copy of ``lm``'s body, trained as a classifier: the control for DPO.

    The head reads the hidden state of the last token of the prompt (the reward model's
    architecture, :class:`dpo_lab.reward_model.RewardModel`) and gives a logit s(x); the loss
    is the binary cross-entropy -[y log sigma(s) + (1 - y) log(1 - sigma(s))], y = 1 for FLAG,
    for exactly ``steps`` optimiser steps of ``batch_size`` examples (the same budget as a
    DPO run). Returns ``(predict, history)``; ``predict(texts)`` gives verdict strings, FLAG
    where sigma(s) > 0.5.
    """
    import pandas as pd
    import torch
    import torch.nn.functional as F

    from dpo_lab.progress import progress as progress_bar
    from dpo_lab.reward_model import encode_texts, pad_rows, reward_model_from_lm
    from dpo_lab.train import check_finite

    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    head = reward_model_from_lm(lm, seed=seed).requires_grad_(True)
    device = next(head.parameters()).device
    ids, _ = encode_texts(tokenizer, texts)
    y = torch.tensor([lab == "flag" for lab in labels], dtype=torch.float32)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    order, rows = [], []
    head.train()
    for step in progress_bar(range(1, steps + 1), desc, enabled=progress):  # steps from 1, as every loop
        if len(order) < batch_size:  # a fresh seeded shuffle of all examples when the last one runs out
            order += torch.randperm(len(ids), generator=generator).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        batch = pad_rows([ids[i] for i in idx], tokenizer.pad_token_id)
        logits = head(**{k: v.to(device) for k, v in batch.items()})
        loss = F.binary_cross_entropy_with_logits(logits, y[idx].to(device))
        check_finite(loss, step, desc)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        optimizer.step()
        rows.append({"step": step, "loss": loss.item()})
    head.eval().requires_grad_(False)

    @torch.no_grad()
    def predict(new_texts: list[str], batch: int = 256) -> list[str]:
        new_ids, _ = encode_texts(tokenizer, new_texts)
        out = []
        for start in range(0, len(new_ids), batch):
            padded = pad_rows(new_ids[start:start + batch], tokenizer.pad_token_id)
            out += (head(**{k: v.to(device) for k, v in padded.items()}) > 0).tolist()
        return ["FLAG spam: head score above 0.5" if p else "ALLOW: head score below 0.5" for p in out]

    predict.model = head
    return predict, pd.DataFrame(rows)


if __name__ == "__main__":
    # python -m dpo_lab.tasks.moderation   rebuilds data/moderation_messages.jsonl
    print(f"wrote {write_messages()}")
