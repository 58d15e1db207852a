"""What a DPO training step costs: memory set-ups, and dpo_lab against TRL.

Run it from the repository root::

    python -m dpo_lab.bench                 # CPU: the tiny GPT-2, dpo_lab vs TRL's DPOTrainer
    python -m dpo_lab.bench --model gpt2    # a GPT-2 (124M) sized model; on a GPU when present

Both frameworks run the same model, the same pairs, batch size, sequence lengths, precision
and optimiser (AdamW, gradient clipping at 1), each after warm-up steps, and the script
prints the median seconds a step (CPU time on a CPU, so a busy machine does not decide it; wall
time on a GPU), tokens a second (non-padding tokens of the policy's forward pass),
peak memory and the dpo_lab/TRL ratios. The ``gpt2`` model is GPT-2's architecture and size
initialised at random (the benchmark needs no download): the compute equals pretrained gpt2's.

The same module runs the memory set-ups of notebook 07 (:func:`run_setup`): a separate
reference copy, precomputed reference log-probs, and LoRA with the reference given by the
same weights with the adapters switched off.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import resource
import sys
import time
from contextlib import nullcontext
from statistics import median

import torch

from dpo_lab.collate import collate_pairs, encode_pairs
from dpo_lab.logprobs import sequence_logprobs
from dpo_lab.train import _batches, dpo_batch_loss, precompute_ref_logps

GPT2_SMALL = {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024}
SETUPS = ("ref_copy", "precomputed_ref", "lora")
# Dense bf16 tensor-core peak, FLOP/s, for model FLOPs utilisation (vendor data sheets, SXM parts).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "T4": 65e12}


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: GPU max allocated on CUDA, else the process's peak resident set (RSS).

    On Linux the RSS peak is read from ``VmHWM`` in ``/proc/self/status``: unlike
    ``getrusage``'s ``ru_maxrss``, it starts afresh in a newly spawned process instead of
    inheriting the parent's high-water mark.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kB elsewhere


def step_clock(device: torch.device):
    """The clock a step is timed with: wall time on a GPU (after a synchronise), and on a CPU the
    process's CPU time, which does not count the time spent waiting for a core that another program
    holds, so that a busy machine does not decide the comparison."""
    return time.perf_counter if device.type == "cuda" else time.process_time


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def bench_pairs(n: int, prompt_words: int = 8, completion_words: int = 24, seed: int = 0) -> list[dict]:
    """``n`` preference records of fixed word counts, cut from the shipped reviews.

    Fixed lengths keep the padded shapes of dpo_lab's and TRL's batches nearly equal.
    """
    import random

    from dpo_lab.tasks.sentiment import load_reviews

    words = " ".join(load_reviews("generated", "train")).split()
    rng = random.Random(seed)

    def piece(k):
        start = rng.randrange(0, len(words) - k)
        return " ".join(words[start:start + k])

    return [{"prompt": piece(prompt_words), "chosen": " " + piece(completion_words),
             "rejected": " " + piece(completion_words)} for _ in range(n)]


def make_model(name: str, tokenizer, seed: int = 0):
    """``"tiny"`` (the course's tiny GPT-2) or ``"gpt2"`` (GPT-2 small: its sizes and its 50,257-token
    vocabulary, random weights; the course tokenizer's ids are a subset of that vocabulary)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from dpo_lab.models import tiny_gpt2

    if name == "tiny":
        return tiny_gpt2(tokenizer, seed=seed)
    config = GPT2Config(vocab_size=50257, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                        pad_token_id=tokenizer.pad_token_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        **GPT2_SMALL)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def dpo_lab_steps(policy, tokenizer, pairs, *, batch_size: int, steps: int, warmup: int, beta: float = 0.1,
                  lr: float = 1e-5, reference=None, ref_logps=None, bf16: bool = False, seed: int = 0) -> dict:
    """Time ``steps`` DPO steps of dpo_lab after ``warmup`` steps.

    The reference enters as a model run every step (``reference``) or as precomputed
    log-probs (``ref_logps``). Returns seconds a step, tokens a second and peak memory.
    """
    device = next(policy.parameters()).device
    chosen, rejected, _ = encode_pairs(tokenizer, pairs, verbose=False)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr)
    policy.train()
    times, tokens = [], 0
    clock = step_clock(device)
    reset_peak_memory(device)
    # seeded shuffled batches, as train_dpo draws them
    order = list(_batches(len(pairs), batch_size, (warmup + steps) * batch_size / len(pairs) + 1, seed))
    for step in range(warmup + steps):
        idx = order[step]
        if len(idx) < batch_size:  # keep every timed batch the same size
            idx = (idx + order[step + 1])[:batch_size]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = clock()
        batch = {k: v.to(device) for k, v in collate_pairs([chosen[i] for i in idx], [rejected[i] for i in idx],
                                                            tokenizer.pad_token_id).items()}
        if ref_logps is not None:
            ref_c, ref_r = ref_logps[0][idx].to(device), ref_logps[1][idx].to(device)
        else:
            with torch.no_grad(), autocast(device, bf16):
                ref_c, ref_r = sequence_logprobs(reference, **batch).float().chunk(2)
        with autocast(device, bf16):
            loss, _ = dpo_batch_loss(policy, batch, ref_c, ref_r, beta=beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= warmup:
            times.append(clock() - start)
            tokens += int(batch["attention_mask"].sum())
    step_s = median(times)  # the median resists the odd slow step
    return {"step_s": step_s, "tokens_per_s": tokens / len(times) / step_s, "peak_mem_mb": peak_memory_mb(device),
            "shape": tuple(batch["input_ids"].shape), "steps": warmup + steps}


def trl_steps(policy, reference, tokenizer, pairs, *, batch_size: int, steps: int, warmup: int, beta: float = 0.1,
              lr: float = 1e-5, precompute: bool = False, bf16: bool = False,
              output_dir: str = "/tmp/dpo_lab_bench") -> dict:
    """Time ``steps`` steps of TRL's DPOTrainer at the same settings, after ``warmup`` steps."""
    import datasets
    import transformers
    import trl

    datasets.disable_progress_bars()
    device = next(policy.parameters()).device
    times, tokens, shapes = [], [0], []
    clock = step_clock(device)

    class Timer(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.start = clock()

        def on_step_end(self, args, state, control, **kwargs):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if state.global_step > warmup:
                times.append(clock() - self.start)

    config = trl.DPOConfig(
        output_dir=output_dir, per_device_train_batch_size=batch_size, max_steps=warmup + steps, learning_rate=lr,
        lr_scheduler_type="constant", beta=beta, loss_type=["sigmoid"], report_to="none",
        use_cpu=device.type == "cpu", gradient_checkpointing=False, max_length=None,
        precompute_ref_log_probs=precompute,
        bf16=bf16, logging_steps=10**6, save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
        max_grad_norm=1.0, seed=0, optim="adamw_torch",
    )
    trainer = trl.DPOTrainer(model=policy, ref_model=reference, args=config, processing_class=tokenizer,
                             train_dataset=datasets.Dataset.from_list(pairs), callbacks=[Timer()])
    collate = trainer.data_collator

    def counting_collator(examples):
        batch = collate(examples)
        tokens[0] += int(batch["attention_mask"].sum())
        shapes.append(tuple(batch["input_ids"].shape))
        return batch

    trainer.data_collator = counting_collator
    trainer.remove_callback(transformers.PrinterCallback)  # no log dict printed at the end
    reset_peak_memory(device)
    trainer.train()
    per_batch = tokens[0] / max(1, len(shapes))
    step_s = median(times)
    return {"step_s": step_s, "tokens_per_s": per_batch / step_s, "peak_mem_mb": peak_memory_mb(device),
            "shape": shapes[-1] if shapes else None}


def model_flops_per_step(model, tokens: float, reference_forward: bool) -> float:
    """Approximate model FLOPs of one DPO step: 6·N per token for the policy's forward and backward,
    plus 2·N per token for the reference's forward when it runs (Kaplan et al., 2020)."""
    n = sum(p.numel() for p in model.parameters())
    return (6 + (2 if reference_forward else 0)) * n * tokens


def _one_run(model_name: str, device: str, framework: str, precompute: bool, batch_size: int, steps: int,
             warmup: int, n_pairs: int, completion_words: int, bf16: bool, threads: int | None) -> dict:
    """One framework at one setting, meant to run in a fresh process so its peak memory is its own."""
    from dpo_lab.tokenizer import load_tokenizer

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    tokenizer = load_tokenizer("course")
    pairs = bench_pairs(n_pairs, completion_words=completion_words)
    torch.manual_seed(0)
    policy = make_model(model_name, tokenizer).to(dev)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    kwargs = dict(batch_size=batch_size, steps=steps, warmup=warmup, bf16=bf16)
    if framework == "trl":
        result = trl_steps(policy, None if precompute else reference, tokenizer, pairs, precompute=precompute, **kwargs)
    else:
        ref_logps = None
        if precompute:
            chosen, rejected, _ = encode_pairs(tokenizer, pairs, verbose=False)
            with autocast(dev, bf16):
                ref_logps = precompute_ref_logps(reference, tokenizer, chosen, rejected, batch_size=batch_size)
            reference = None
            gc.collect()
        result = dpo_lab_steps(policy, tokenizer, pairs, reference=reference, ref_logps=ref_logps, **kwargs)
    result["mfu"] = None
    if dev.type == "cuda" and bf16:
        tokens = result["tokens_per_s"] * result["step_s"]
        flops = model_flops_per_step(policy, tokens, reference_forward=not precompute)
        name = torch.cuda.get_device_name(dev)
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
        result["mfu"] = flops / result["step_s"] / peak if peak else None
    return result


def compare_with_trl(model_name: str = "tiny", device: str | None = None, batch_size: int = 8, steps: int = 20,
                     warmup: int = 3, n_pairs: int = 256, completion_words: int = 24, bf16: bool | None = None,
                     threads: int | None = None) -> list[dict]:
    """dpo_lab against TRL, with a per-step reference and with precomputed reference log-probs.

    Each of the four runs happens in its own fresh process (``spawn``), so that its peak
    memory, on CPU the process's peak RSS, is its own and not the high-water mark of a run
    before it.
    """
    import multiprocessing

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if bf16 is None:
        bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    ctx = multiprocessing.get_context("spawn")
    rows = []
    for precompute in (False, True):
        results = {}
        for framework in ("dpo_lab", "trl"):
            with ctx.Pool(1) as pool:
                results[framework] = pool.apply(_one_run, (model_name, device, framework, precompute, batch_size,
                                                           steps, warmup, n_pairs, completion_words, bf16, threads))
        for framework, r in results.items():
            rows.append({"framework": framework, "reference": "precomputed" if precompute else "per step",
                         "model": model_name, "device": device, "precision": "bf16" if bf16 else "fp32",
                         "batch_pairs": batch_size, **r})
        rows[-2]["speedup_vs_trl"] = results["trl"]["step_s"] / results["dpo_lab"]["step_s"]
        rows[-2]["memory_ratio_vs_trl"] = results["dpo_lab"]["peak_mem_mb"] / results["trl"]["peak_mem_mb"]
    return rows


# --- the memory set-ups of notebook 07 ---------------------------------------------------

def state_memory_mb(modules, adam: bool = True) -> float:
    """MiB held by the weights, the gradients and AdamW's two moments of a set-up.

    Counted from the tensors themselves (a weight shared by two modules counts once);
    AdamW keeps two numbers for each trainable parameter. Activations are not included.
    On a CPU with a tiny model the process's RSS is dominated by the Python and PyTorch
    runtime; this counts what the set-up itself keeps alive.
    """
    seen, total = set(), 0
    for module in modules:
        for p in module.parameters():
            if p.data_ptr() in seen:  # a weight shared by policy and reference counts once
                continue
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
            if p.requires_grad:  # its gradient, and AdamW's first and second moments
                total += (3 if adam else 1) * p.numel() * p.element_size()
    return total / 2**20


def lora_policy(model, rank: int = 16, alpha: int = 32, targets=("c_attn", "c_proj", "c_fc")):
    """Wrap a GPT-2 with LoRA adapters (Hu et al., 2021): W x + (alpha/r) B A x, A and B trained.

    GPT-2's projections are ``Conv1D`` layers that store W transposed, hence ``fan_in_fan_out``.
    With the adapters disabled the model is exactly the base model, so it is its own reference.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0,
                        fan_in_fan_out=True, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def run_setup(setup: str, cfg: dict, beta: float, lr: float, steps: int, batch_size: int, warmup: int = 2,
              lora_rank: int = 16, threads: int | None = 1, bf16: bool = False) -> dict:
    """Train the SFT model of notebook 02 with DPO for ``steps`` steps under one memory set-up.

    ``setup``: ``"ref_copy"`` (a frozen copy of the SFT model runs every step),
    ``"precomputed_ref"`` (reference log-probs computed once, no reference in memory while
    training) or ``"lora"`` (peft adapters; the reference log-probs come from the same model
    with its adapters disabled). Returns timings, memory, models held and the gold reward
    reached. Meant to run in its own process (see :func:`run_setups`).
    """
    from dpo_lab.env import seed_everything
    from dpo_lab.evaluate import sample
    from dpo_lab.tasks import sentiment
    from dpo_lab.tokenizer import load_tokenizer

    if threads:
        torch.set_num_threads(threads)
    seed_everything(cfg["seed"])  # a fresh process: LoRA's initial A matrices come from this seed
    if setup not in SETUPS:
        raise ValueError(f"setup must be one of {SETUPS}, got {setup!r}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(cfg["tokenizer"])
    gold = sentiment.LexiconSentiment() if cfg["gold"] == "lexicon" else sentiment.ClassifierSentiment(cfg["gold"])
    sft, folder = sentiment.sft_model(cfg, tokenizer, progress=False)
    pairs, _ = sentiment.sft_pairs(cfg, sft, tokenizer, gold, folder)
    pairs = [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs]
    sft = sft.to(device)
    chosen, rejected, _ = encode_pairs(tokenizer, pairs, max_length=cfg["max_length"], verbose=False)
    gc.collect()
    baseline_mb = peak_memory_mb(device)

    start = time.perf_counter()
    reference, ref_logps = None, None
    if setup == "ref_copy":
        policy, reference = copy.deepcopy(sft), sft.eval().requires_grad_(False)
        models_in_memory = 2
    elif setup == "precomputed_ref":
        ref_logps = precompute_ref_logps(sft, tokenizer, chosen, rejected)
        policy = sft  # the reference is no longer needed: train the model in place
        models_in_memory = 1
    else:
        policy = lora_policy(sft, rank=lora_rank)
        with policy.disable_adapter():
            ref_logps = precompute_ref_logps(policy, tokenizer, chosen, rejected)
        models_in_memory = 1
    prepare_s = time.perf_counter() - start

    timing = dpo_lab_steps(policy, tokenizer, pairs, batch_size=batch_size, steps=steps - warmup, warmup=warmup,
                           beta=beta, lr=lr, reference=reference, ref_logps=ref_logps, bf16=bf16)
    policy.eval()
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    held = [policy] + ([reference] if reference is not None else [])
    prompts = sentiment.eval_prompts(cfg)
    samples = sample(policy, tokenizer, prompts, n=cfg["eval_samples"], max_new_tokens=cfg["max_new_tokens"],
                     seed=1234)
    gold_reward = float(gold([p + t for p, t in zip(samples.prompts, samples.texts)]).mean())
    peak = peak_memory_mb(device)
    return {"setup": setup, "peak_mem_mb": peak, "peak_mem_growth_mb": peak - baseline_mb,
            "state_mb": state_memory_mb(held), "step_s": timing["step_s"],
            "tokens_per_s": timing["tokens_per_s"], "models_in_memory": models_in_memory,
            "trainable_params": trainable, "prepare_s": prepare_s, "gold_reward": gold_reward,
            "device": str(device), "precision": "bf16" if bf16 else "fp32"}


def run_setups(setups, cfg: dict, **kwargs) -> list[dict]:
    """:func:`run_setup` for each set-up, each in a fresh process so its peak memory is its own."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    rows = []
    for setup in setups:
        with ctx.Pool(1) as pool:
            rows.append(pool.apply(run_setup, (setup, cfg), kwargs))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time a DPO training step: dpo_lab against TRL's DPOTrainer.")
    parser.add_argument("--model", choices=["tiny", "gpt2"], default="tiny")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs a step")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--completion-words", type=int, default=24)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rows = compare_with_trl(args.model, args.device, args.batch_size, args.steps, args.warmup,
                            completion_words=args.completion_words, threads=args.threads)
    print(f"{'framework':9} {'reference':12} {'shape':>11} {'s/step':>8} {'tokens/s':>10} {'peak MB':>9} "
          f"{'MFU':>6}  ratio (TRL time / dpo_lab time; dpo_lab memory / TRL memory)")
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "-"
        ratio = (f"  speed x{r['speedup_vs_trl']:.2f}, memory x{r['memory_ratio_vs_trl']:.2f}"
                 if "speedup_vs_trl" in r else "")
        print(f"{r['framework']:9} {r['reference']:12} {str(r['shape']):>11} {r['step_s']:8.4f} "
              f"{r['tokens_per_s']:10.0f} {r['peak_mem_mb']:9.0f} {mfu:>6}{ratio}")
    print(f"model {rows[0]['model']}, device {rows[0]['device']}, {rows[0]['precision']}, "
          f"{rows[0]['batch_pairs']} pairs a step; each run in its own process. Peak memory: GPU max allocated, "
          "or on CPU the process's peak RSS (mostly the Python and PyTorch runtime for a tiny model).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
