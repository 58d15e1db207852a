"""Which DPO learning rate and beta? The sweep of notebook 05, on the validation reviews.

Notebook 05 trains DPO on pairs of the SFT model's summaries labelled by simulated annotators
and measures, on its **test** reviews, whether DPO beats SFT. Its DPO learning rate and beta
are chosen here, offline, on the **validation** reviews of ``data/summarization_docs.jsonl``
(documents the notebook's test numbers never see): every (learning rate, beta) of
:data:`LEARNING_RATES` x :data:`BETAS` is trained and scored, and the notebook reads the
pick from the file this writes::

    python -m dpo_lab.tasks.summarization_sweep   # writes data/summarization_sweep.json (29 min on 2 loaded cores)

It builds the SFT model and the labelled pairs exactly as the notebook does (the knobs come
from the notebook's own ``CONFIGS["tiny"]`` cell, with the same seeds), so the grid's runs
differ from the notebook's only in learning rate and beta. The SFT length, the pair
temperature and the annotators are not swept: they were set before this sweep existed (on
what is now the validation split, never on the new test split) and are kept.

**The score**, decided before looking: a run's validation win rate against the SFT model,
the mean of its win rates at temperatures 0 and 1 (each the share of validation reviews where
its summary has the higher gold reward, ties one half; both models sampled with the same
seed). The pick: the highest score (:func:`choose`).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np

from dpo_lab.paths import data_path
from dpo_lab.tasks import sweep

SWEEP_PATH = data_path("summarization_sweep.json")
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "05_summarization_dpo.ipynb"  # in a checkout
LEARNING_RATES = (2.5e-4, 5e-4, 1e-3)
BETAS = (0.25, 0.5, 1.0)
TEMPERATURES = (0.0, 1.0)  # the score averages the win rate against SFT at these sampling temperatures
#: the knobs that decide the sweep's runs; the notebook checks that its own equal these
KNOBS = ("model_sizes", "n_sft_docs", "sft_epochs", "sft_lr", "sft_batch_size", "max_length", "seed",
         "n_pref_docs", "pair_temperature", "annotator_temperature", "annotator_length_bonus", "max_new_tokens",
         "dpo_epochs", "dpo_batch_size", "n_eval_docs")


def notebook_tiny_config(path=NOTEBOOK) -> dict:
    """``CONFIGS["tiny"]`` of notebook 05, read from its file (the cell that defines it, run apart)."""
    from dpo_lab.sizing import notebook_config

    return notebook_config(path, "tiny")


def choose(runs: list[dict]) -> dict:
    """The run with the highest validation score (the first of equals, in grid order)."""
    if not runs:
        raise ValueError("choose() needs at least one run")
    return max(runs, key=lambda r: r["score"])


def labelled_pairs(sft, tokenizer, cfg: dict, gold) -> tuple[list[dict], dict]:
    """The notebook's pairs: two SFT summaries a preference review, labelled by the simulated annotators."""
    from dpo_lab.evaluate import sample
    from dpo_lab.tasks import summarization as summ

    docs = summ.load_documents("preference", limit=cfg["n_pref_docs"])
    s = sample(sft, tokenizer, [d["prompt"] for d in docs], n=2, max_new_tokens=cfg["max_new_tokens"],
               temperature=cfg["pair_temperature"], seed=7)
    return summ.annotate(s.prompts[0::2], s.texts[0::2], s.texts[1::2], gold, cfg["annotator_temperature"],
                         seed=cfg["seed"], length_bonus=cfg["annotator_length_bonus"],
                         truncated=(s.truncated[0::2], s.truncated[1::2]))


def evaluate(model, tokenizer, prompts: list[str], cfg: dict, gold) -> dict:
    """Per review and temperature: the gold reward and the word count of one summary (seed 2024, as the notebook)."""
    from dpo_lab.evaluate import sample
    from dpo_lab.tasks.summarization import words

    out = {}
    for t in TEMPERATURES:
        s = sample(model, tokenizer, prompts, n=1, max_new_tokens=cfg["max_new_tokens"], temperature=t, seed=2024)
        out[str(t)] = {"gold": gold([p + x for p, x in zip(prompts, s.texts)]).tolist(),
                       "words": [len(words(x)) for x in s.texts]}
    return out


def run_sweep(cfg: dict, progress: bool = True) -> dict:
    """SFT and pairs as in notebook 05, then every (lr, beta) scored on the validation reviews."""
    import torch

    from dpo_lab.collate import encode_pairs
    from dpo_lab.env import setup_notebook
    from dpo_lab.evaluate import pairwise_wins
    from dpo_lab.tasks import summarization as summ
    from dpo_lab.tokenizer import load_tokenizer
    from dpo_lab.train import precompute_ref_logps, train_dpo

    start = time.perf_counter()
    setup_notebook(cfg["seed"], quiet=True, threads=1)  # as the notebook's set-up cell: seeds, one thread
    tokenizer = load_tokenizer("course")
    gold = summ.GoldSummaryReward(summ.load_documents("preference") + summ.load_documents("validation"))
    sft, _, _ = summ.sft_model(cfg, tokenizer, progress=progress, device="cpu")  # cached under runs/ by its config
    sft = sft.eval().requires_grad_(False)
    pairs, label_report = labelled_pairs(sft, tokenizer, cfg, gold)
    valid = summ.load_documents("validation", limit=cfg["n_eval_docs"])
    prompts = [d["prompt"] for d in valid]
    sft_eval = evaluate(sft, tokenizer, prompts, cfg, gold)
    chosen, rejected, _ = encode_pairs(tokenizer, pairs, max_length=cfg["max_length"], verbose=False)
    ref_logps = precompute_ref_logps(sft, tokenizer, chosen, rejected)  # shared by every run: the SFT reference
    runs = []
    for lr in LEARNING_RATES:
        for beta in BETAS:
            policy = copy.deepcopy(sft).requires_grad_(True)
            train_dpo(policy, None, tokenizer, pairs, beta=beta, lr=lr, epochs=cfg["dpo_epochs"],
                      batch_size=cfg["dpo_batch_size"], max_length=cfg["max_length"], seed=cfg["seed"],
                      ref_logps=ref_logps, progress=progress, desc=f"DPO lr={lr:g} beta={beta:g}")
            result = evaluate(policy.eval(), tokenizer, prompts, cfg, gold)
            win = {t: float(pairwise_wins(np.subtract(result[t]["gold"], sft_eval[t]["gold"])).mean())
                   for t in result}
            run = {"lr": lr, "beta": beta, "win_rate_vs_sft": win, "score": float(np.mean(list(win.values()))),
                   "gold": {t: float(np.mean(r["gold"])) for t, r in result.items()},
                   "mean_words": {t: float(np.mean(r["words"])) for t, r in result.items()}}
            runs.append(run)
            print(f"lr {lr:g} beta {beta:g}: win rate vs SFT {win} score {run['score']:.3f} "
                  f"words {run['mean_words']}", flush=True)
    best = choose(runs)
    return {"command": "python -m dpo_lab.tasks.summarization_sweep", "generator_version": summ.GENERATOR_VERSION,
            "config": {k: cfg[k] for k in KNOBS}, "learning_rates": list(LEARNING_RATES), "betas": list(BETAS),
            "temperatures": list(TEMPERATURES), "split": "validation", "n_validation_reviews": len(valid),
            "n_pairs": len(pairs), "annotator": label_report,
            "sft": {"gold": {t: float(np.mean(r["gold"])) for t, r in sft_eval.items()},
                    "mean_words": {t: float(np.mean(r["words"])) for t, r in sft_eval.items()}},
            "runs": runs, "chosen": {"lr": best["lr"], "beta": best["beta"]},
            "seconds": round(time.perf_counter() - start, 1), "torch_threads": torch.get_num_threads()}


def load_sweep(path=SWEEP_PATH) -> dict:
    """The sweep's results as written by :func:`main`."""
    return sweep.read(path, __name__)


def main(argv=None) -> None:
    sweep.main(__doc__, SWEEP_PATH, lambda: run_sweep(notebook_tiny_config()), argv)


if __name__ == "__main__":
    main()
