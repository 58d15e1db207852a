"""Content moderation as text generation: read a message, write a verdict.

A policy reads a message and writes one line::

    FLAG <category>: <reason>      (category: phishing, scam or spam)
    ALLOW: <reason>

The domain is kept classroom-safe on purpose: spam, scams and phishing against ordinary
messages; no slurs, no graphic content. Two sources, one schema (a record is
``{"text", "label", "category", "subtype", "hard", "verdict"}``, ``label`` is ``"flag"`` or
``"allow"``, ``verdict`` the gold verdict line):

* ``tiny``: :func:`generate_messages`, a seeded template generator (shipped as
  ``data/moderation_messages.jsonl``; rebuild with ``python -m dpo_lab.tasks.moderation``).
  It includes *hard cases*: legitimate messages that look like scams (a bank notice, a
  real raffle prize, a friend asking to be paid back) and scams without the obvious words
  (a "new number" plea, a request to read back a code).
* ``full``: the SMS Spam Collection (Almeida, Gomez Hidalgo & Yamakami, DocEng 2011) from
  the Hub, :data:`HUB_DATASET`, mapped by :func:`map_sms_spam`. It has only ham/spam
  labels, so its verdicts have one category (spam) and one fixed reason a class.

Evaluation: :func:`parse_verdict` reads an output; an output it cannot read is *counted*
as unparseable, never dropped. :func:`flag_metrics` gives precision, recall and F1 for
FLAG (the positive class) and a confusion matrix whose third column is the unparseable
outputs: an unparseable answer on a scam is a miss, on an ordinary message it is not a
false flag.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dpo_lab.paths import data_path

DATA_PATH = data_path("moderation_messages.jsonl")  # shipped with the package (dpo_lab.paths)
GENERATOR_VERSION = 1  # bump when the generator changes
N_MESSAGES = 1500
# the shipped file is one list; these are its splits (demonstrations, preference prompts, held out)
SPLITS = {"sft": (0, 600), "prefs": (600, 1100), "test": (1100, 1500)}
CATEGORIES = ("phishing", "scam", "spam")

# Hub source of the full profile. The Hub card lists its licence as "unknown"; the UCI Machine
# Learning Repository, which distributes the same collection, lists it under CC BY 4.0.
HUB_DATASET = "ucirvine/sms_spam"
HUB_LICENCE = "CC BY 4.0 (UCI Machine Learning Repository; the Hub card says 'unknown')"
SMS_SPAM_VERDICTS = {"flag": "FLAG spam: unsolicited bulk message", "allow": "ALLOW: ordinary personal message"}

# --- fillers --------------------------------------------------------------------------------
NAMES = ["Sam", "Alex", "Priya", "Tom", "Mia", "Leo", "Nora", "Omar", "Jess", "Ben", "Ana", "Kai"]
BANKS = ["City Bank", "North Bank", "Cedar Bank", "Union Bank"]
SERVICES = ["mail", "music", "cloud", "photo", "shop"]
SITES = ["secure-login.co", "account-check.net", "verify-now.info", "my-acct-help.com", "claim-desk.biz"]
SHOPS = ["Bookly", "FreshMart", "SportsHub", "PetPal", "HomeNest"]
PRIZES = ["new phone", "tablet", "holiday", "bike", "100 voucher"]
AMOUNTS = ["5", "20", "45", "80", "150", "300"]
PLACES = ["the library", "the cafe", "the park", "the station", "room 12"]
TIMES = ["9", "10", "noon", "3", "5", "6"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
ITEMS = ["charger", "notes", "calculator", "book", "ball", "keys"]
PRODUCTS = ["tea", "phone case", "face cream", "app", "game"]
# a sign-off shared by every kind of message, so no single word gives the label away
SIGN_OFFS = ["", "", " Thanks.", " Cheers, {name}.", " Have a good day.", " Speak soon.", " Regards."]


def _fill(rng: random.Random, template: str) -> str:
    pools = {"name": NAMES, "bank": BANKS, "service": SERVICES, "site": SITES, "shop": SHOPS, "prize": PRIZES,
             "amount": AMOUNTS, "place": PLACES, "time": TIMES, "day": DAYS, "item": ITEMS, "product": PRODUCTS}
    return re.sub(r"\{(\w+)\}", lambda m: rng.choice(pools[m.group(1)]), template)


@dataclass(frozen=True)
class Subtype:
    """One kind of message: its label, category, the reason a good verdict gives, templates.

    ``lookalike`` is the plausible *wrong* verdict for it: for a scam the verdict that misses
    it, for a legitimate message the false flag its surface invites.
    """

    name: str
    label: str  # "flag" or "allow"
    category: str  # one of CATEGORIES, or "none"
    reason: str
    hard: bool
    weight: int
    templates: tuple[str, ...]
    lookalike: str

    @property
    def verdict(self) -> str:
        return f"FLAG {self.category}: {self.reason}" if self.label == "flag" else f"ALLOW: {self.reason}"


SUBTYPES = (
    Subtype("login_link", "flag", "phishing", "asks you to log in through a link", False, 3, (
        "Your {bank} account is locked. Log in at {site} within 24 hours to keep it open.",
        "Security alert: new sign-in on your {service} account. Confirm your password at {site} now.",
        "{bank}: we could not verify you. Update your details at {site} today or lose access.",
    ), "ALLOW: a notice that asks for nothing"),
    Subtype("code_request", "flag", "phishing", "asks for a one-time code", True, 2, (
        "Hi {name}, I sent a six digit code to your phone by mistake, can you read it back to me?",
        "This is {bank} support. To stop the payment, reply with the number we just texted you.",
        "Oops, my code went to your phone. Just send me the digits, {name}, thanks!",
    ), "ALLOW: ordinary personal message"),
    Subtype("prize_fee", "flag", "scam", "asks for a fee to claim a prize", False, 3, (
        "Congratulations! You won a {prize}. Pay a {amount} handling fee at {site} to claim it.",
        "WINNER! Your number was drawn for a {prize}. Send {amount} today to release your prize.",
    ), "ALLOW: a known prize with nothing to pay"),
    Subtype("gift_cards", "flag", "scam", "asks for payment in gift cards", False, 2, (
        "This is your manager. I need four {shop} gift cards for a client today, send me the codes.",
        "Your tax bill is overdue. Pay {amount} in {shop} gift cards within one hour.",
    ), "ALLOW: ordinary personal message"),
    Subtype("new_number", "flag", "scam", "a stranger asks for money", True, 2, (
        "Hi mum, this is my new number, my phone broke. Can you send {amount} to my friend today?",
        "Hey, it is {name}, I lost my wallet on the trip. Could you move {amount} to this account tonight?",
        "Hello dear, we met online last month. I am stuck at the airport and need {amount} for a ticket.",
    ), "ALLOW: a friend settling a shared cost"),
    Subtype("promo", "flag", "spam", "unsolicited advertising", False, 3, (
        "{shop} SALE! 50% off everything this weekend only. Reply STOP to opt out.",
        "Best deals of the year at {shop}! Free delivery on all orders. Shop now before it ends!",
    ), "ALLOW: ordinary personal message"),
    Subtype("friendly_ad", "flag", "spam", "advertising dressed as a personal message", True, 2, (
        "Hey {name}! Loved chatting. I found this amazing {product} at {shop}, you should try it too.",
        "Hi, long time! I started selling {product} from home, want me to add you to my list?",
    ), "ALLOW: ordinary personal message"),
    Subtype("ordinary", "allow", "none", "ordinary personal message", False, 6, (
        "Hi {name}, are we still meeting at {place} at {time}?",
        "Can you bring the {item} to class tomorrow? I left mine at home.",
        "Thanks for the help today, {name}. See you on {day}!",
        "Running late, I will be at {place} around {time}.",
        "Did you finish the homework? I am stuck on question 3.",
    ), "FLAG spam: unsolicited advertising"),
    Subtype("bank_notice", "allow", "none", "a notice that asks for nothing", True, 2, (
        "{bank}: your monthly statement is ready in the app. We will never ask for your password.",
        "{bank}: a payment of {amount} was made on {day}. If this was you, no action is needed.",
    ), "FLAG phishing: asks you to log in through a link"),
    Subtype("real_prize", "allow", "none", "a known prize with nothing to pay", True, 2, (
        "{name}, you won the {prize} in the school raffle! Collect it from the office on {day}.",
        "Well done {name}, your poster won first prize. The certificate is at reception.",
    ), "FLAG scam: asks for a fee to claim a prize"),
    Subtype("repay_friend", "allow", "none", "a friend settling a shared cost", True, 2, (
        "Hi {name}, the concert tickets came to {amount} each. Pay me back whenever, no rush.",
        "Pizza was {amount} in total, so you owe me half. Thanks for coming, {name}!",
    ), "FLAG scam: a stranger asks for money"),
    Subtype("delivery", "allow", "none", "a delivery update with no fee", True, 1, (
        "Your {shop} order will arrive on {day} before {time}. No action is needed.",
        "{shop}: your parcel was left at {place}. Have a nice day!",
    ), "FLAG scam: asks for a fee to claim a prize"),
)
SUBTYPE_BY_NAME = {s.name: s for s in SUBTYPES}


def generate_messages(n: int = N_MESSAGES, seed: int = 0) -> list[dict]:
    """``n`` seeded messages ``{"text", "label", "category", "subtype", "hard", "verdict"}``.

    A subtype is drawn with probability proportional to its ``weight`` (a bit over half the
    messages are flagged, over a third are hard cases), then a template, fillers and a
    sign-off. Every text is distinct (a repeat is drawn again), so no held-out message is
    also a training message.
    """
    rng = random.Random(seed)
    weights = [s.weight for s in SUBTYPES]
    records, seen = [], set()
    while len(records) < n:
        sub = rng.choices(SUBTYPES, weights=weights)[0]
        text = _fill(rng, rng.choice(sub.templates) + rng.choice(SIGN_OFFS))
        if text in seen:
            continue
        seen.add(text)
        records.append({"text": text, "label": sub.label, "category": sub.category, "subtype": sub.name,
                        "hard": sub.hard, "verdict": sub.verdict})
    return records


def write_messages(path: Path = DATA_PATH, n: int = N_MESSAGES, seed: int = 0) -> Path:
    """Rebuild ``data/moderation_messages.jsonl`` bit for bit."""
    from dpo_lab.data import save_jsonl

    return save_jsonl(generate_messages(n, seed), path)


# --- prompts and verdicts -------------------------------------------------------------------

def to_prompt(text: str) -> str:
    """The policy's prompt: the message, then ``Verdict:`` (the completion starts with a space)."""
    return f"Message: {text}\nVerdict:"


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
    """The output agrees with the label *and* names the actual problem (the gold verdict line)."""
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
    A ratio with a zero denominator is 0.
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
            "missed": n_flag - tp, "false_flags": fp, "unparseable": int(confusion[:, 2].sum()),
            "confusion": confusion}


def mistake_cost(metrics: dict, n: int, cost_missed: float = 10.0, cost_false_flag: float = 1.0) -> float:
    """Cost per 1,000 messages: ``cost_missed`` a scam let through, ``cost_false_flag`` a good message held."""
    return 1000.0 * (cost_missed * metrics["missed"] + cost_false_flag * metrics["false_flags"]) / n


# --- preference pairs -----------------------------------------------------------------------
PAIR_CONSTRUCTIONS = ("both", "misses", "false_flags")


def wrong_verdicts(record: dict) -> dict[str, str]:
    """Two kinds of wrong verdict for a record, for when the policy's own samples hold none.

    ``"decision"``: the lookalike verdict (the miss of a scam, the false flag of a
    lookalike legitimate message). ``"reason"``: the right decision with a wrong reason
    (another category's verdict, or another legitimate reason).
    """
    sub = SUBTYPE_BY_NAME.get(record["subtype"])
    if sub is None:  # a Hub record (SMS Spam Collection): no kinds, so the other class's verdict
        other = "allow" if record["label"] == "flag" else "flag"
        same_side = [v.verdict for v in SUBTYPES if v.label == record["label"] and v.verdict != record["verdict"]]
        return {"decision": SMS_SPAM_VERDICTS[other], "reason": same_side[hash_text(record["text"]) % len(same_side)]}
    same_side = [s.verdict for s in SUBTYPES if s.label == sub.label and s.verdict != sub.verdict]
    return {"decision": sub.lookalike, "reason": same_side[hash_text(record["text"]) % len(same_side)]}


def hash_text(text: str) -> int:
    """A stable small hash (Python's ``hash`` of a string changes between runs)."""
    return sum((i + 1) * b for i, b in enumerate(text.encode("utf-8"))) % 1_000_003


def build_pairs(records: list[dict], samples: list[list[str]] | None = None, construction: str = "both",
                reason_pairs: bool = True) -> tuple[list[dict], dict]:
    """Verdict preference pairs: chosen = the gold verdict, rejected = a wrong one.

    ``samples[i]`` are the policy's own verdicts for ``records[i]`` (on-policy negatives);
    the rejected verdict is the first sample with a wrong *decision*, else (if
    ``reason_pairs``) the first with the right decision and a wrong reason, else a
    :func:`wrong_verdicts` stand-in of the same kind. ``construction`` picks the records:

    * ``"both"``: every record;
    * ``"misses"``: only messages that should be flagged (teaches "do not let scams through");
    * ``"false_flags"``: only legitimate messages (teaches "do not hold good messages").

    Returns ``(pairs, report)``; the report counts where the rejected verdicts came from.
    """
    if construction not in PAIR_CONSTRUCTIONS:
        raise ValueError(f"construction must be one of {PAIR_CONSTRUCTIONS}, got {construction!r}")
    if samples is not None and len(samples) != len(records):
        raise ValueError(f"{len(records)} records but {len(samples)} sample lists")
    keep = {"both": ("flag", "allow"), "misses": ("flag",), "false_flags": ("allow",)}[construction]
    pairs, report = [], {"on_policy_decision": 0, "on_policy_reason": 0, "stand_in": 0}
    for i, rec in enumerate(records):
        if rec["label"] not in keep:
            continue
        own = samples[i] if samples is not None else []
        wrong_decision = [t for t in own if parse_verdict(t).decision not in (rec["label"], None)]
        wrong_reason = [t for t in own if parse_verdict(t).decision == rec["label"] and not verdict_is_correct(t, rec)]
        if wrong_decision:
            rejected, source = wrong_decision[0].strip().split("\n", 1)[0], "on_policy_decision"
        elif reason_pairs and wrong_reason:
            rejected, source = wrong_reason[0].strip().split("\n", 1)[0], "on_policy_reason"
        else:
            rejected, source = wrong_verdicts(rec)["decision"], "stand_in"
        report[source] += 1
        pairs.append({"prompt": to_prompt(rec["text"]), "chosen": to_completion(rec["verdict"]),
                      "rejected": to_completion(rejected), "label": rec["label"]})
    return pairs, report


# --- loading ---------------------------------------------------------------------------------

def map_sms_spam(row: dict) -> dict:
    """One row of ``ucirvine/sms_spam`` (``sms``: str, ``label``: 0 ham / 1 spam) to our record.

    ``label`` may also be the class name (``"ham"``/``"spam"``), as in a CSV or JSON export.
    """
    if row.get("sms") is None:
        raise KeyError("sms")
    if row.get("label") is None:
        raise KeyError("label")
    label = {0: "allow", 1: "flag", "ham": "allow", "spam": "flag"}.get(row["label"])
    if label is None:
        raise ValueError(f"'label' must be 0/1 or 'ham'/'spam', got {row['label']!r}")
    return {"text": str(row["sms"]).strip(), "label": label, "category": "spam" if label == "flag" else "none",
            "subtype": "sms_" + label, "hard": False, "verdict": SMS_SPAM_VERDICTS[label]}


def load_messages(source: str = "generated", split: str = "train", limit: int | None = None,
                  seed: int = 0) -> list[dict]:
    """Records of one split (``"sft"``, ``"prefs"`` or ``"test"``).

    ``"generated"`` reads the shipped file and cuts it by :data:`SPLITS`. Any other source
    is a Hub id (:data:`HUB_DATASET`) or a local file/folder in its schema, read with
    ``datasets``; its single ``train`` split is shuffled with ``seed`` and cut 40/40/20.
    A row that cannot be mapped is an error naming the source, the row and the field.
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
        import datasets

        path = Path(source)
        if path.is_file():
            kind = {".parquet": "parquet", ".csv": "csv"}.get(path.suffix, "json")
            ds = datasets.load_dataset(kind, data_files={"train": str(path)}, split="train")
        else:
            ds = datasets.load_dataset(source, split="train")
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
        cut1, cut2 = int(0.4 * len(order)), int(0.8 * len(order))
        idx = {"sft": order[:cut1], "prefs": order[cut1:cut2], "test": order[cut2:]}[split]
        records = [mapped[i] for i in idx]
    records = records[:limit] if limit is not None else records
    if not records:
        raise ValueError(f"no messages: {source} split {split!r} is empty (limit={limit})")
    return records


def right_decisions_by_difficulty(outputs: dict[str, list[str]], records: list[dict]):
    """Share of right flag/allow decisions per method, on easy and on hard cases.

    Returns a DataFrame indexed by method with the columns ``easy`` and ``hard`` always
    present: a source with no hard cases (SMS Spam marks none) gets NaN under ``hard``.
    """
    import pandas as pd

    rows = [{"method": name, "hard": bool(r["hard"]), "right decision": parse_verdict(out).decision == r["label"]}
            for name, outs in outputs.items() for out, r in zip(outs, records)]
    if not rows:
        raise ValueError("no outputs to score: every method's list of outputs is empty")
    table = pd.DataFrame(rows).groupby(["method", "hard"])["right decision"].mean().unstack()
    table = table.reindex(columns=[False, True])
    table.columns = ["easy", "hard"]
    return table


# --- the non-generative reference point ------------------------------------------------------

def fit_bow_classifier(texts: list[str], labels: list[str], seed: int = 0):
    """Logistic regression on word and word-pair counts (scikit-learn): the plain classifier.

    Returns a function ``texts -> list of verdict strings`` (``FLAG spam: ...``-shaped only in
    its decision: a binary classifier gives no category or reason), so the same
    :func:`flag_metrics` scores it.
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


if __name__ == "__main__":
    # python -m dpo_lab.tasks.moderation   rebuilds data/moderation_messages.jsonl
    print(f"wrote {write_messages()}")
