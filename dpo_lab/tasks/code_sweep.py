"""Does plain DPO still collapse at other learning rates and betas? The sweep of notebook 04.

Notebook 04 trains plain DPO and DPO + NLL on execution pairs. One run at one learning rate
says little about DPO in general, so this module trains both losses over a grid of
learning rates and betas (:data:`LEARNING_RATES` x :data:`BETAS`) and scores every run on
the **validation** tasks of ``data/code_tasks.jsonl`` (never on the held-out test tasks).
It is too slow for the notebook's few minutes (twelve runs), so it runs offline and the
notebook loads and plots what it wrote::

    python -m dpo_lab.tasks.code_sweep   # writes data/code_dpo_sweep.json (about 10 minutes on a busy 2-core machine)

It builds the SFT model and the pairs exactly as the notebook does (the knobs come from the
notebook's own ``CONFIGS["tiny"]`` cell, and the same seeds), so the grid's runs differ from
the notebook's only in learning rate and beta.

**Collapse**, decided before looking: a run *collapses* when the share of its samples that
are valid Python falls below the SFT model's, with the paired 95% bootstrap interval of the
difference over validation tasks entirely below 0, and its pass@1 is no higher than the SFT
model's. The pick for the notebook: each loss's (learning rate, beta) with the highest
validation pass@1.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np

from dpo_lab.paths import data_path
from dpo_lab.tasks import sweep

SWEEP_PATH = data_path("code_dpo_sweep.json")
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "04_code_dpo.ipynb"  # in a checkout
LEARNING_RATES = (1e-4, 3e-4, 1e-3)
BETAS = (0.1, 0.5)
LOSSES = ("dpo", "dpo_nll")  # plain DPO, and DPO + NLL on the chosen program (weight cfg["nll_alpha"])
#: the knobs that decide the sweep's runs; the notebook checks that its own equal these
KNOBS = ("model_sizes", "sft_per_task", "p_correct", "sft_epochs", "sft_lr", "sft_batch_size", "seed",
         "max_new_tokens", "temperature", "pair_samples", "pairs_per_task", "eval_samples", "dpo_epochs",
         "dpo_batch_size", "nll_alpha")


def notebook_tiny_config(path=NOTEBOOK) -> dict:
    """``CONFIGS["tiny"]`` of notebook 04, read from its file (the cell that defines it, run apart)."""
    from dpo_lab.sizing import notebook_config

    return notebook_config(path, "tiny")


def evaluate_valid(policy, tokenizer, tasks, cfg, cache, seed=1) -> dict:
    """Per validation task: the share of samples passing every test and the share that are valid Python."""
    from dpo_lab.evaluate import sample
    from dpo_lab.tasks.code import judge

    n = cfg["eval_samples"]
    s = sample(policy, tokenizer, [t["prompt"] for t in tasks], n=n, max_new_tokens=cfg["max_new_tokens"],
               temperature=cfg["temperature"], seed=seed)
    results = judge([t for t in tasks for _ in range(n)], s.texts, cache=cache)
    ok = np.array([r.status == "ok" for r in results]).reshape(len(tasks), n)
    valid = np.array([not (r.status == "error" and "SyntaxError" in (r.error or ""))
                      for r in results]).reshape(len(tasks), n)
    return {"pass@1": float(ok.mean()), "valid": float(valid.mean()),
            "per_task_pass": ok.mean(1).tolist(), "per_task_valid": valid.mean(1).tolist()}


def collapsed(run: dict, sft: dict) -> dict:
    """The collapse rule of the module docstring, with the paired intervals it rests on."""
    from dpo_lab.stats import paired_difference

    pass_diff, pass_ci = paired_difference(run["per_task_pass"], sft["per_task_pass"])
    valid_diff, valid_ci = paired_difference(run["per_task_valid"], sft["per_task_valid"])
    return {"pass_diff": pass_diff, "pass_ci": list(pass_ci), "valid_diff": valid_diff, "valid_ci": list(valid_ci),
            "collapsed": bool(valid_ci[1] < 0 and pass_diff <= 0)}


def run_sweep(cfg: dict, progress: bool = True) -> dict:
    """SFT and pairs as in notebook 04, then every (loss, lr, beta) scored on the validation tasks."""
    import torch

    from dpo_lab.collate import encode_pairs
    from dpo_lab.env import setup_notebook
    from dpo_lab.evaluate import sample
    from dpo_lab.models import load_model
    from dpo_lab.tasks.code import GENERATOR_VERSION, execution_pairs, judge, load_tasks, sft_corpus
    from dpo_lab.tokenizer import load_tokenizer
    from dpo_lab.train import precompute_ref_logps, train_dpo, train_sft

    start = time.perf_counter()
    setup_notebook(cfg["seed"], quiet=True, threads=1)  # as the notebook's set-up cell: seeds, one thread
    tasks = load_tasks()
    train_tasks = [t for t in tasks if t["split"] == "train"]
    valid_tasks = [t for t in tasks if t["split"] == "validation"]
    corpus = sft_corpus(train_tasks, per_task=cfg["sft_per_task"], p_correct=cfg["p_correct"], seed=cfg["seed"])
    tokenizer = load_tokenizer("course")
    sft = load_model("tiny", tokenizer, seed=cfg["seed"], **cfg["model_sizes"])
    train_sft(sft, tokenizer, [r["prompt"] for r in corpus], [r["completion"] for r in corpus],
              epochs=cfg["sft_epochs"], lr=cfg["sft_lr"], batch_size=cfg["sft_batch_size"], seed=cfg["seed"],
              progress=progress)
    sft.requires_grad_(False)
    cache: dict = {}
    n = cfg["pair_samples"]
    samples = sample(sft, tokenizer, [t["prompt"] for t in train_tasks], n=n, max_new_tokens=cfg["max_new_tokens"],
                     temperature=cfg["temperature"], seed=2)
    pair_tasks = [t for t in train_tasks for _ in range(n)]
    results = judge(pair_tasks, samples.texts, cache=cache)
    pairs = execution_pairs(pair_tasks, samples.texts, np.array([r.pass_rate for r in results]),
                            max_per_task=cfg["pairs_per_task"], seed=cfg["seed"], truncated=samples.truncated)
    sft_eval = evaluate_valid(sft, tokenizer, valid_tasks, cfg, cache)
    chosen, rejected, _ = encode_pairs(tokenizer, pairs, verbose=False)
    ref_logps = precompute_ref_logps(sft, tokenizer, chosen, rejected)  # shared by every run: the SFT reference
    runs = []
    for loss in LOSSES:
        for lr in LEARNING_RATES:
            for beta in BETAS:
                policy = copy.deepcopy(sft).requires_grad_(True)
                history = train_dpo(policy, None, tokenizer, pairs, beta=beta, loss_type="sigmoid",
                                    nll_alpha=cfg["nll_alpha"] if loss == "dpo_nll" else 0.0,
                                    epochs=cfg["dpo_epochs"], lr=lr, batch_size=cfg["dpo_batch_size"],
                                    seed=cfg["seed"], ref_logps=ref_logps, progress=progress,
                                    desc=f"{loss} lr={lr:g} beta={beta:g}")
                run = {"loss": loss, "lr": lr, "beta": beta,
                       **evaluate_valid(policy, tokenizer, valid_tasks, cfg, cache),
                       "logps_chosen": [float(history["logps/chosen"].iloc[:5].mean()),
                                        float(history["logps/chosen"].iloc[-5:].mean())]}
                run.update(collapsed(run, sft_eval))
                runs.append(run)
                print(f"{loss:8} lr {lr:g} beta {beta:g}: pass@1 {run['pass@1']:.3f} valid {run['valid']:.2f} "
                      f"collapsed {run['collapsed']}", flush=True)
    best = {loss: max((r for r in runs if r["loss"] == loss), key=lambda r: r["pass@1"]) for loss in LOSSES}
    return {"command": "python -m dpo_lab.tasks.code_sweep", "generator_version": GENERATOR_VERSION,
            "config": {k: cfg[k] for k in KNOBS}, "learning_rates": list(LEARNING_RATES), "betas": list(BETAS),
            "n_validation_tasks": len(valid_tasks), "n_pairs": len(pairs), "sft": sft_eval, "runs": runs,
            "chosen": {loss: {"lr": r["lr"], "beta": r["beta"]} for loss, r in best.items()},
            "seconds": round(time.perf_counter() - start, 1), "torch_threads": torch.get_num_threads()}


def load_sweep(path=SWEEP_PATH) -> dict:
    """The sweep's results as written by :func:`main`."""
    return sweep.read(path, __name__)


def main(argv=None) -> None:
    sweep.main(__doc__, SWEEP_PATH, lambda: run_sweep(notebook_tiny_config()), argv)


if __name__ == "__main__":
    main()
