"""Controlled sentiment: the first experiment of the DPO paper, at course scale.

A policy continues the opening words of a movie review; a frozen sentiment model
scores the review, and the question is how much positive sentiment a method buys
for how much KL from the reference (Rafailov et al., 2023, section 6.1).

Two sources, one schema (a review is a string; prompts are its opening words):

* ``tiny``: reviews from :func:`generate_reviews`, a seeded template generator
  (shipped as ``data/sentiment_reviews.jsonl``), and :class:`LexiconSentiment`, a gold
  sentiment scorer defined here in a few lines, so its value is exact and offline.
* ``full``: IMDb (``stanfordnlp/imdb``) from the Hub and a Hub sentiment classifier
  (:class:`ClassifierSentiment`, ``lvwerra/distilbert-imdb`` by default) as the gold reward.

Gold reward (both profiles): P(positive | review text), a number in (0, 1).
"""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import numpy as np

from dpo_lab.paths import data_path
from dpo_lab.reward_model import HubScorer

DATA_PATH = data_path("sentiment_reviews.jsonl")  # shipped with the package (dpo_lab.paths)
GENERATOR_VERSION = 1  # bump when the generator changes; it is part of the runs/ cache key

# --- the word lists behind the generator and the gold scorer ----------------------
POSITIVE = ["wonderful", "brilliant", "great", "superb", "moving", "delightful", "charming", "excellent",
            "beautiful", "fantastic", "gripping", "funny", "clever", "touching", "stunning", "memorable",
            "enjoyable", "powerful", "fresh", "perfect"]
NEGATIVE = ["awful", "terrible", "boring", "dull", "weak", "bad", "poor", "dreadful", "tedious", "messy",
            "forgettable", "clumsy", "painful", "bland", "predictable", "lifeless", "silly", "disappointing",
            "flat", "horrible"]
POSITIVE_VERBS = ["loved", "enjoyed", "liked", "admired"]
NEGATIVE_VERBS = ["hated", "disliked", "regretted", "endured"]
SUBJECTS = ["film", "movie", "story", "plot", "acting", "cast", "director", "script", "soundtrack", "ending",
            "dialogue", "characters", "pacing", "visuals", "lead actor", "music"]
OPENINGS = ["I watched this film", "I saw this movie", "This movie", "This film", "The movie", "The film",
            "My friend and I watched this", "I went to see this", "We rented this movie", "I finally saw this film",
            "Last night I watched this", "This is a film"]
CONNECTORS = [" last weekend.", " with my family.", " on a rainy Sunday.", " at a small theater.",
              " after reading the book.", " because of the trailer.", " on a long flight.", "."]
NEGATIONS = {"not", "never", "no", "hardly", "isn't", "wasn't", "didn't", "don't"}


def _sentence(rng: random.Random, positive: bool) -> str:
    """One sentence about one aspect of the film, positive or negative."""
    adj = rng.choice(POSITIVE if positive else NEGATIVE)
    other = rng.choice(NEGATIVE if positive else POSITIVE)
    subject = rng.choice(SUBJECTS)
    verb = rng.choice(POSITIVE_VERBS if positive else NEGATIVE_VERBS)
    templates = [
        f"The {subject} was {adj}.",
        f"The {subject} is really {adj}.",
        f"I thought the {subject} was {adj}.",
        f"The {subject} was not {other}.",  # negation: the opposite word, flipped
        f"I {verb} the {subject}.",
        f"Overall, a {adj} {rng.choice(['film', 'movie'])}.",
        f"I would {'' if positive else 'not '}recommend it.",
        f"The {subject} felt {adj} and {rng.choice(POSITIVE if positive else NEGATIVE)}.",
    ]
    return rng.choice(templates)


def generate_reviews(n: int, seed: int = 0) -> list[dict]:
    """``n`` seeded reviews ``{"text", "label"}``: an opening, then 2 to 4 sentences.

    A review is positive (label 1) or negative (label 0) with equal odds; each sentence
    follows the review's sentiment with probability 0.8, so reviews are mixed as real ones are.
    """
    rng = random.Random(seed)
    reviews = []
    for _ in range(n):
        label = rng.random() < 0.5
        opening = rng.choice(OPENINGS) + rng.choice(CONNECTORS)
        body = [_sentence(rng, label if rng.random() < 0.8 else not label) for _ in range(rng.randint(2, 4))]
        reviews.append({"text": " ".join([opening, *body]), "label": int(label)})
    return reviews


def review_prompt(text: str, n_words: int) -> str:
    """The first ``n_words`` words of a review: the prefix a policy must continue."""
    return " ".join(text.split()[:n_words])


def make_prompts(texts: list[str], seed: int = 0, min_words: int = 2, max_words: int = 5) -> list[str]:
    """A prefix of 2 to 5 words for each review (the DPO paper used 2 to 8 tokens of IMDb)."""
    rng = random.Random(seed)
    return [review_prompt(t, rng.randint(min_words, max_words)) for t in texts]


# --- the gold reward ----------------------------------------------------------------
_WORD = re.compile(r"[a-z']+")


def lexicon_score(text: str) -> float:
    """Sum of word polarities, a polarity flipped when a negation precedes it within two words.

    +1 for a positive adjective or verb, -1 for a negative one, and "recommend" counts +1.
    """
    words = _WORD.findall(text.lower())
    score = 0.0
    for i, word in enumerate(words):
        if word in _POLARITY:
            flip = any(w in NEGATIONS for w in words[max(0, i - 2):i])
            score += -_POLARITY[word] if flip else _POLARITY[word]
    return score


_POLARITY = {**{w: 1.0 for w in POSITIVE + POSITIVE_VERBS + ["recommend"]},
             **{w: -1.0 for w in NEGATIVE + NEGATIVE_VERBS}}


class LexiconSentiment:
    """Gold reward of the tiny profile: P(positive) = sigmoid(lexicon_score(text)).

    Like a classifier's probability it saturates: a review with three more positive
    than negative words already scores 0.95. It is exact, fast and offline; it is also
    hackable (it only counts words), which the failure-mode notebook exploits.
    """

    name = "lexicon"

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.array([1.0 / (1.0 + math.exp(-lexicon_score(t))) for t in texts])


class ClassifierSentiment(HubScorer):
    """Gold reward of the full profile: a sequence classifier's P(positive) (a :class:`HubScorer`).

    ``name_or_path`` is a Hub id or a local folder with a ``save_pretrained`` sentiment
    classifier; ``positive_label`` names its positive class (``lvwerra/distilbert-imdb``
    calls it ``POSITIVE``; a label id works too).
    """

    def __init__(self, name_or_path: str = "lvwerra/distilbert-imdb", positive_label: str | int = "POSITIVE",
                 device=None, batch_size: int = 64, max_length: int = 512):
        super().__init__(name_or_path, label=positive_label, device=device, batch_size=batch_size,
                         max_length=max_length)


# --- loading reviews ----------------------------------------------------------------

def balanced_order(labels, seed: int = 0) -> list[int]:
    """Row indices in a seeded order whose every prefix is balanced across labels.

    Each label's rows are shuffled with ``seed``, then the labels take turns (0, 1, 0, 1...),
    so the first ``n`` rows hold ``n / n_labels`` of each while a label lasts; the rest follow.
    """
    rng = random.Random(seed)
    by_label: dict = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    queues = []
    for label in sorted(by_label):
        rows = by_label[label]
        rng.shuffle(rows)
        queues.append(rows)
    order = []
    for turn in range(max((len(q) for q in queues), default=0)):
        order += [q[turn] for q in queues if turn < len(q)]
    return order


def load_reviews(source: str = "generated", split: str = "train", limit: int | None = None,
                 seed: int = 0) -> list[str]:
    """Review texts: ``"generated"`` (the shipped file), or IMDb in the Hub's schema.

    Any other ``source`` is read with ``datasets.load_dataset``: a Hub id such as
    ``"stanfordnlp/imdb"`` or a local folder/file in its layout (a ``text`` column).
    IMDb's ``<br />`` line breaks are turned into spaces. IMDb's splits are sorted by label
    (all negative reviews first), so a Hub split is put in a seeded, label-balanced order
    (:func:`balanced_order`; a seeded shuffle when it has no ``label`` column) before
    ``limit`` takes a prefix.
    """
    if source == "generated":
        import json

        with DATA_PATH.open(encoding="utf-8") as handle:
            texts = [json.loads(line)["text"] for line in handle if line.strip()]
        # the shipped file has one list; the held-out split is its last fifth
        cut = len(texts) * 4 // 5
        texts = texts[:cut] if split == "train" else texts[cut:]
    else:
        from dpo_lab.data import open_dataset

        ds = open_dataset(source, split)
        if "text" not in ds.column_names:
            raise ValueError(f"{source} [{split}] has columns {ds.column_names}; expected a 'text' column")
        if "label" in ds.column_names:
            order = balanced_order(ds["label"], seed)
        else:
            order = list(range(len(ds)))
            random.Random(seed).shuffle(order)
        if limit is not None:
            order = order[:limit]
        texts = [t.replace("<br />", " ") for t in ds.select(order)["text"]]
    if not texts:
        raise ValueError(f"no reviews: {source} [{split}] gave 0 texts (limit={limit})")
    return texts[:limit] if limit is not None else texts


def write_reviews(path: Path = DATA_PATH, n: int = 3000, seed: int = 0) -> Path:
    """Rebuild ``data/sentiment_reviews.jsonl`` bit for bit."""
    from dpo_lab.data import save_jsonl

    return save_jsonl(generate_reviews(n, seed), path)


if __name__ == "__main__":
    # python -m dpo_lab.tasks.sentiment   rebuilds data/sentiment_reviews.jsonl
    print(f"wrote {write_reviews()}")


# --- the pipeline of the paper: SFT -> sample and rank -> pairs (cached under runs/) ----

def sft_model(cfg: dict, tokenizer, progress: bool = True, device=None):
    """The SFT model of a config: trained on reviews, or loaded from ``runs/`` if cached.

    The model is moved to ``device`` (the notebook's one device decision; by default
    :func:`dpo_lab.env.get_device`) *before* it trains, and a cached model is loaded onto it,
    so SFT runs where the model will be used. Dropout is off either way.

    ``cfg`` keys: ``model`` ("tiny" or a Hub id/folder), ``model_sizes`` (tiny only),
    ``reviews`` (a :func:`load_reviews` source), ``n_sft_reviews``, ``sft_epochs``, ``sft_lr``,
    ``sft_batch_size``, ``max_length``, ``seed``. SFT trains on whole reviews (the prompt is
    just the BOS token), so the model can continue any opening.
    Returns ``(model, folder, history)`` (:func:`dpo_lab.train.cached_sft`); ``history`` is ``None``
    when the model came from the cache.
    """
    from dpo_lab.train import cached_sft

    keys = ["model", "model_sizes", "reviews", "n_sft_reviews", "sft_epochs", "sft_lr", "sft_batch_size",
            "max_length", "seed"]

    def examples():  # whole reviews after an empty prompt (the BOS token)
        reviews = load_reviews(cfg["reviews"], "train", cfg["n_sft_reviews"], seed=cfg["seed"])
        return [""] * len(reviews), reviews

    spec = {**{k: cfg.get(k) for k in keys}, "task": "sentiment", "generator": GENERATOR_VERSION}
    return cached_sft("sentiment-sft", spec, cfg, tokenizer, examples, device=device, progress=progress)


def preference_pairs(prompts: list[str], texts: list[str], rewards, n: int,
                     truncated: list[bool] | None = None) -> tuple[list[dict], int]:
    """Best-versus-worst pairs from ``n`` ranked samples a prompt (prompt-major order).

    For each prompt the completion with the highest gold reward is ``chosen`` and the
    lowest is ``rejected``. A prompt whose samples all tie (or whose best and worst
    texts are identical) gives no pair; the number skipped is returned, not hidden.
    Each record also carries ``chosen_reward`` and ``rejected_reward``, and, from
    ``truncated`` (:attr:`dpo_lab.evaluate.Samples.truncated`), ``chosen_truncated`` and
    ``rejected_truncated``: a sample cut off by ``max_new_tokens`` is trained on without EOS.
    """
    rewards = np.asarray(rewards)
    truncated = [False] * len(texts) if truncated is None else truncated
    pairs, skipped = [], 0
    for i in range(0, len(texts), n):
        r = rewards[i:i + n]
        best, worst = i + int(np.argmax(r)), i + int(np.argmin(r))
        if r.max() == r.min() or texts[best] == texts[worst] or not texts[best].strip() or not texts[worst].strip():
            skipped += 1
            continue
        pairs.append({"prompt": prompts[i], "chosen": texts[best], "rejected": texts[worst],
                      "chosen_reward": float(rewards[best]), "rejected_reward": float(rewards[worst]),
                      "chosen_truncated": bool(truncated[best]), "rejected_truncated": bool(truncated[worst])})
    return pairs, skipped


def sft_pairs(cfg: dict, model, tokenizer, gold, sft_folder: Path) -> tuple[list[dict], dict]:
    """Preference pairs from the SFT model's own samples, ranked by the gold reward (cached).

    For ``n_train_prompts`` training prefixes, sample ``samples_per_prompt`` completions,
    score prefix + completion with ``gold``, and keep best-versus-worst. Returns the pairs
    and a small report (prompts, pairs, skipped ties, samples cut off by ``max_new_tokens`` and
    how many chosen and rejected completions are such samples, seconds).
    """
    import json
    import time

    from dpo_lab.cache import code_version
    from dpo_lab.data import load_jsonl, save_jsonl
    from dpo_lab.evaluate import sample

    # keyed on the code that samples and ranks too: a fix to it must not reuse stale pairs
    code = code_version("evaluate", "sampling", "tasks.sentiment")
    path = sft_folder / f"pairs-{cfg['n_train_prompts']}x{cfg['samples_per_prompt']}-{cfg['max_new_tokens']}" \
                        f"-{getattr(gold, 'name', 'gold')}-{code}.jsonl".replace("/", "_")
    report_path = path.with_suffix(".report.json")
    if path.exists() and report_path.exists():
        print(f"loading cached pairs from {path}")
        full = [json.loads(line) for line in path.read_text().splitlines()]
        load_jsonl(path)  # validates every record
        return full, json.loads(report_path.read_text())
    start = time.perf_counter()
    reviews = load_reviews(cfg["reviews"], "train", cfg["n_sft_reviews"], seed=cfg["seed"])
    prompts = make_prompts(reviews[:cfg["n_train_prompts"]], seed=cfg["seed"])
    samples = sample(model, tokenizer, prompts, n=cfg["samples_per_prompt"], max_new_tokens=cfg["max_new_tokens"],
                     seed=cfg["seed"])
    rewards = gold([p + t for p, t in zip(samples.prompts, samples.texts)])
    pairs, skipped = preference_pairs(samples.prompts, samples.texts, rewards, cfg["samples_per_prompt"],
                                      samples.truncated)
    if not pairs:
        raise ValueError(f"no preference pairs: all {len(prompts)} prompts' {cfg['samples_per_prompt']} samples "
                         f"tied under the gold reward {getattr(gold, 'name', 'gold')!r} (or were empty)")
    report = {"prompts": len(prompts), "samples": len(samples.texts), "pairs": len(pairs),
              "skipped_ties": skipped, "truncated_samples": sum(samples.truncated),
              "truncated_chosen": sum(p["chosen_truncated"] for p in pairs),
              "truncated_rejected": sum(p["rejected_truncated"] for p in pairs),
              "seconds": round(time.perf_counter() - start, 1)}
    save_jsonl(pairs, path)
    report_path.write_text(json.dumps(report) + "\n")
    return pairs, report


def eval_prompts(cfg: dict) -> list[str]:
    """Held-out prefixes: openings of reviews the SFT model never trained on."""
    held_out = load_reviews(cfg["reviews"], "test", cfg["n_eval_prompts"], seed=cfg["seed"])
    return make_prompts(held_out, seed=cfg["seed"] + 1)


def evaluate_policy(policy, ref_model, tokenizer, prompts: list[str], gold, cfg: dict, seed: int = 0) -> dict:
    """Mean gold reward and KL(pi || pi_ref) from ``eval_samples`` samples a prompt.

    Returns ``{"gold_reward", "kl", "rewards", "kls", "samples"}``; ``rewards`` and ``kls`` (each
    sample's summed next-token KL, :func:`dpo_lab.evaluate.token_kl_samples`) are one a sample,
    prompt-major, so that intervals can resample prompts.
    """
    from dpo_lab.evaluate import sample, token_kl_samples

    samples = sample(policy, tokenizer, prompts, n=cfg["eval_samples"], max_new_tokens=cfg["max_new_tokens"],
                     seed=seed)
    rewards = gold([p + t for p, t in zip(samples.prompts, samples.texts)])
    kls = (np.zeros(len(rewards)) if policy is ref_model
           else token_kl_samples(policy, ref_model, tokenizer, samples).numpy())
    return {"gold_reward": float(np.mean(rewards)), "kl": float(np.mean(kls)), "rewards": rewards, "kls": kls,
            "samples": samples}


# --- notebook 07: the same DPO training under three memory set-ups ----------------------

SETUPS = ("ref_copy", "precomputed_ref", "lora")


def run_setup(setup: str, cfg: dict, beta: float, lr: float, steps: int, batch_size: int, warmup: int = 2,
              lora_rank: int = 16, threads: int | None = 1, precision: str = "fp32") -> dict:
    """Train the SFT model of ``cfg`` with DPO for ``steps`` steps under one memory set-up.

    ``setup``: ``"ref_copy"`` (a frozen copy of the SFT model runs every step),
    ``"precomputed_ref"`` (reference log-probs computed once, no reference in memory while
    training) or ``"lora"`` (:func:`dpo_lab.models.lora_policy`; the reference log-probs come
    from the same model with its adapters disabled). Returns timings
    (:func:`dpo_lab.bench.dpo_lab_steps`), peak memory, ``state_mb``
    (:func:`dpo_lab.costs.model_memory_mb` of the models held), models held and the gold reward
    reached. Meant to run in its own process (see :func:`run_setups`). ``precision``
    (``"fp32"``, ``"bf16"``, ``"fp16"``) defaults to fp32, so that the set-ups are compared at
    one precision; pass ``dpo_lab.precision.choose_precision(device)`` for the course's rule.
    """
    import copy
    import gc
    import time

    import torch

    from dpo_lab.bench import dpo_lab_steps
    from dpo_lab.collate import encode_pairs
    from dpo_lab.costs import model_memory_mb, peak_memory_mb
    from dpo_lab.env import seed_everything
    from dpo_lab.evaluate import sample
    from dpo_lab.models import lora_policy
    from dpo_lab.tokenizer import load_tokenizer
    from dpo_lab.train import precompute_ref_logps

    if setup not in SETUPS:
        raise ValueError(f"setup must be one of {SETUPS}, got {setup!r}")
    if threads:
        torch.set_num_threads(threads)
    seed_everything(cfg["seed"])  # a fresh process: LoRA's initial A matrices come from this seed
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(cfg["tokenizer"])
    gold = LexiconSentiment() if cfg["gold"] == "lexicon" else ClassifierSentiment(cfg["gold"])
    sft, folder, _ = sft_model(cfg, tokenizer, progress=False)
    pairs, _ = sft_pairs(cfg, sft, tokenizer, gold, folder)  # with their cut-off flags, as train_dpo reads them
    sft = sft.to(device)
    chosen, rejected, _ = encode_pairs(tokenizer, pairs, max_length=cfg["max_length"], verbose=False)
    gc.collect()
    baseline_mb = peak_memory_mb(device)

    start = time.perf_counter()
    reference, ref_logps = None, None
    if setup == "ref_copy":
        policy, reference = copy.deepcopy(sft), sft.eval().requires_grad_(False)
    elif setup == "precomputed_ref":
        ref_logps = precompute_ref_logps(sft, tokenizer, chosen, rejected)
        policy = sft  # the reference is no longer needed: train the model in place
    else:
        policy = lora_policy(sft, rank=lora_rank)
        with policy.disable_adapter():
            ref_logps = precompute_ref_logps(policy, tokenizer, chosen, rejected)
    prepare_s = time.perf_counter() - start

    timing = dpo_lab_steps(policy, reference, tokenizer, pairs, batch_size=batch_size, steps=steps - warmup,
                           warmup=warmup, beta=beta, lr=lr, ref_logps=ref_logps, precision=precision)
    policy.eval()
    held = [reference] if reference is not None else []
    state_mb = model_memory_mb(held=held, trained=[policy])  # before sampling: what training kept alive
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    samples = sample(policy, tokenizer, eval_prompts(cfg), n=cfg["eval_samples"], max_new_tokens=cfg["max_new_tokens"],
                     seed=1234)
    gold_reward = float(gold([p + t for p, t in zip(samples.prompts, samples.texts)]).mean())
    peak = peak_memory_mb(device)
    return {"setup": setup, "peak_mem_mb": peak, "peak_mem_growth_mb": peak - baseline_mb, "state_mb": state_mb,
            "step_s": timing["step_s"], "step_times": timing["step_times"], "tokens_per_s": timing["tokens_per_s"],
            "models_in_memory": 1 + len(held), "trainable_params": trainable, "prepare_s": prepare_s,
            "gold_reward": gold_reward, "device": str(device), "precision": precision}


def run_setups(setups, cfg: dict, **kwargs) -> list[dict]:
    """:func:`run_setup` for each set-up, each in a fresh process so its peak memory is its own."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    rows = []
    for setup in setups:
        with ctx.Pool(1) as pool:
            rows.append(pool.apply(run_setup, (setup, cfg), kwargs))
    return rows
