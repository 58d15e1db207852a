"""What a DPO training step costs: dpo_lab against TRL's DPOTrainer, on synthetic pairs.

Run it from the repository root::

    python -m dpo_lab.bench                 # CPU: the tiny GPT-2, dpo_lab vs TRL's DPOTrainer
    python -m dpo_lab.bench --model gpt2    # a GPT-2 (124M) sized model; on a GPU when present
    python -m dpo_lab.bench --vocab-size 50257 --seq-len 262 --batch-size 8   # how memory grows
    python -m dpo_lab.bench --logprobs-memory   # one forward+backward of sequence_logprobs, plain vs chunked

Both frameworks run the same model object (so the same attention implementation, ``--attn``,
and the same compile setting, ``--compile``: the model's body is compiled in place before
either framework sees it, TRL's own ``torch_compile`` staying off), the same pairs, batch
size, sequence lengths, precision (``--precision``, by default the course's rule,
:mod:`dpo_lab.precision`), the same precomputed-reference setting and optimiser (AdamW,
gradient clipping at 1, constant learning rate), each after warm-up steps. dpo_lab runs
twice: with its default chunked log-probs and with the plain full-logits path; TRL 1.16
scores tokens with its own tiled LM head (``add_fused_lm_head``). The script prints the
median seconds a step (CPU time on a CPU, so a busy machine does not decide it; wall time
on a GPU), tokens a second (non-padding tokens of the policy's forward pass), peak memory,
model-FLOPs utilisation on a GPU, and the dpo_lab/TRL ratios.

Peak memory is measured, not estimated: on a GPU ``torch.cuda.max_memory_allocated`` after
a reset; on a CPU the kernel's peak-RSS counter (Linux ``VmHWM``) after resetting it just
before the timed steps, reported whole (it includes the Python and PyTorch runtime and the
models) and as the rise during the steps. Each run happens in a fresh process.

The ``gpt2`` model is GPT-2's architecture and size initialised at random (the benchmark
needs no download): the compute equals pretrained gpt2's. The pairs are synthetic
(:func:`bench_pairs`): a step's time and memory depend on the shapes, not on the words.

Notebook 07's memory set-ups (a reference copy, precomputed reference log-probs, LoRA),
which train on the sentiment task, are :func:`dpo_lab.tasks.sentiment.run_setup`.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import sys
import time
from statistics import median

import torch

from dpo_lab.collate import collate_pairs, encode_pairs
from dpo_lab.costs import peak_memory_mb, peak_rss_mb, reset_peak_memory
from dpo_lab.logprobs import DEFAULT_CHUNK_SIZE, sequence_logprobs
from dpo_lab.precision import Precision, backward_and_step, choose_precision
from dpo_lab.train import dpo_batch_loss, precompute_ref_logps, shuffled_batches

GPT2_SMALL = {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024}
TINY = {"n_layer": 2, "n_head": 4, "n_embd": 128, "n_positions": 1024}
FRAMEWORKS = ("dpo_lab", "dpo_lab_plain", "trl")
# Dense bf16/fp16 tensor-core peak, FLOP/s, for model FLOPs utilisation (vendor data sheets, SXM parts;
# the T4 has no bf16: its figure is fp16).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "T4": 65e12}


def step_clock(device: torch.device):
    """The clock a step is timed with: wall time on a GPU (after a synchronise), and on a CPU the
    process's CPU time, which does not count the time spent waiting for a core that another program
    holds, so that a busy machine does not decide the comparison."""
    return time.perf_counter if device.type == "cuda" else time.process_time


def bench_pairs(n: int, prompt_words: int = 12, completion_words: int = 31, seed: int = 0,
                seq_len: int | None = None, tokenizer=None) -> list[dict]:
    """``n`` synthetic preference records: seeded random words, each one token of ``tokenizer``.

    Why synthetic: a step's time and memory depend on the shapes (rows, tokens, vocabulary), not
    on what the words say, and the core must not depend on a task's data. Why words and not
    random token ids: TRL's ``DPOTrainer`` takes text, and random ids, decoded and tokenized
    again, need not come back as the same number of tokens. Each word here is a token of the
    tokenizer's vocabulary that encodes, with its leading space, to itself alone, so every prompt
    is ``prompt_words`` tokens and every completion ``completion_words`` (+ EOS): both frameworks
    see the same shapes and no padding. The defaults make 12 + 31 + EOS = 44 tokens a sequence,
    the length of the review-text pairs the benchmark used before (so earlier timings compare).
    With ``seq_len`` the completion is ``seq_len - prompt_words - 1`` words, and a sequence
    ``seq_len`` tokens. ``tokenizer`` defaults to the course tokenizer.
    """
    import random

    if tokenizer is None:
        from dpo_lab.tokenizer import load_tokenizer

        tokenizer = load_tokenizer("course")
    if seq_len is not None:
        completion_words = seq_len - prompt_words - 1
    if prompt_words < 1 or completion_words < 1:
        raise ValueError(f"bench_pairs needs at least one prompt and one completion word, got prompt_words="
                         f"{prompt_words}, completion_words={completion_words} (seq_len={seq_len})")
    words = one_token_words(tokenizer)
    rng = random.Random(seed)

    def text(k):
        return "".join(" " + rng.choice(words) for _ in range(k))

    return [{"prompt": text(prompt_words), "chosen": text(completion_words), "rejected": text(completion_words)}
            for _ in range(n)]


def one_token_words(tokenizer) -> list[str]:
    """The lower-case words of ``tokenizer``'s vocabulary that, after a space, encode to one token (by id)."""
    words = []
    for token, token_id in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]):
        word = tokenizer.convert_tokens_to_string([token]).strip()
        if (word.isascii() and word.isalpha() and word.islower()
                and tokenizer(" " + word, add_special_tokens=False)["input_ids"] == [token_id]):
            words.append(word)
    if len(words) < 20:
        raise ValueError(f"the tokenizer has only {len(words)} one-token words; bench_pairs needs a word vocabulary")
    return words


def make_model(name: str, tokenizer, seed: int = 0, vocab_size: int | None = None, attn: str = "sdpa"):
    """``"tiny"`` (the course's tiny GPT-2 sizes) or ``"gpt2"`` (GPT-2 small: its sizes and its 50,257-token
    vocabulary), random weights. ``vocab_size`` overrides the vocabulary (the course tokenizer's ids are a
    subset of any vocabulary at least as large); ``attn`` is the attention implementation."""
    from transformers import GPT2Config, GPT2LMHeadModel

    sizes = TINY if name == "tiny" else GPT2_SMALL
    vocab = vocab_size or (len(tokenizer) if name == "tiny" else 50257)
    if vocab < len(tokenizer):
        raise ValueError(f"vocab_size {vocab} is smaller than the tokenizer's {len(tokenizer)}")
    config = GPT2Config(vocab_size=vocab, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                        pad_token_id=tokenizer.pad_token_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        attn_implementation=attn, **sizes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config)


def _precision_name(precision: str | None, bf16: bool | None, device) -> str:
    if precision is not None:
        return precision
    if bf16 is not None:  # the older switch
        return "bf16" if bf16 else "fp32"
    return choose_precision(device)


def dpo_lab_steps(policy, ref_model, tokenizer, pairs, *, batch_size: int, steps: int, warmup: int,
                  beta: float = 0.1, lr: float = 1e-5, ref_logps=None, bf16: bool | None = None, seed: int = 0,
                  precision: str | None = None, chunk_size: int | None = DEFAULT_CHUNK_SIZE,
                  max_length: int | None = None) -> dict:
    """Time ``steps`` DPO steps of dpo_lab after ``warmup`` steps.

    The reference enters as a model run every step (``ref_model``) or as precomputed
    log-probs (``ref_logps``; ``ref_model`` is then ``None``), as in :func:`dpo_lab.train.train_dpo`.
    ``precision`` (default: the course's rule for the device; ``bf16=True`` is the older way to
    ask for bf16); ``chunk_size=None`` times the plain
    full-logits path. Returns seconds a step, tokens a second, peak memory and its rise
    over the level when timing began.
    """
    device = next(policy.parameters()).device
    mp = Precision(_precision_name(precision, bf16, device), device.type)
    scaler = mp.grad_scaler()
    chosen, rejected, _ = encode_pairs(tokenizer, pairs, max_length=max_length, verbose=False)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr)
    policy.train()
    times, tokens = [], 0
    clock = step_clock(device)
    gc.collect()
    base_mb = reset_peak_memory(device)
    # seeded shuffled batches, as train_dpo draws them
    order = list(shuffled_batches(len(pairs), batch_size, (warmup + steps) * batch_size / len(pairs) + 1, seed))
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
            with torch.no_grad(), mp.autocast():
                ref_c, ref_r = sequence_logprobs(ref_model, **batch, chunk_size=chunk_size).float().chunk(2)
        with mp.autocast():
            loss, _ = dpo_batch_loss(policy, batch, ref_c, ref_r, beta=beta, chunk_size=chunk_size)
        backward_and_step(loss, optimizer, policy.parameters(), 1.0, scaler)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= warmup:
            times.append(clock() - start)
            tokens += int(batch["attention_mask"].sum())
    step_s = median(times)  # the median resists the odd slow step
    peak = peak_memory_mb(device)
    return {"step_s": step_s, "tokens_per_s": tokens / len(times) / step_s, "peak_mem_mb": peak,
            "peak_rise_mb": peak - base_mb, "shape": tuple(batch["input_ids"].shape), "steps": warmup + steps,
            "step_times": times}


def trl_steps(policy, ref_model, tokenizer, pairs, *, batch_size: int, steps: int, warmup: int, beta: float = 0.1,
              lr: float = 1e-5, precompute: bool = False, bf16: bool | None = None, precision: str | None = None,
              max_length: int | None = None, output_dir: str = "/tmp/dpo_lab_bench") -> dict:
    """Time ``steps`` steps of TRL's DPOTrainer at the same settings, after ``warmup`` steps."""
    import datasets
    import transformers
    import trl

    datasets.disable_progress_bars()
    device = next(policy.parameters()).device
    precision = _precision_name(precision, bf16, device)
    times, tokens, shapes = [], [0], []
    clock = step_clock(device)
    base = [0.0]

    class Timer(transformers.TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            gc.collect()
            base[0] = reset_peak_memory(device)

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
        use_cpu=device.type == "cpu", gradient_checkpointing=False, max_length=max_length,
        precompute_ref_log_probs=precompute, torch_compile=False,
        bf16=precision == "bf16", fp16=precision == "fp16", logging_steps=10**6, save_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0, max_grad_norm=1.0, seed=0, optim="adamw_torch",
    )
    trainer = trl.DPOTrainer(model=policy, ref_model=ref_model, args=config, processing_class=tokenizer,
                             train_dataset=datasets.Dataset.from_list(pairs), callbacks=[Timer()])
    collate = trainer.data_collator

    def counting_collator(examples):
        batch = collate(examples)
        tokens[0] += int(batch["attention_mask"].sum())
        shapes.append(tuple(batch["input_ids"].shape))
        return batch

    trainer.data_collator = counting_collator
    trainer.remove_callback(transformers.PrinterCallback)  # no log dict printed at the end
    trainer.train()
    per_batch = tokens[0] / max(1, len(shapes))
    step_s = median(times)
    peak = peak_memory_mb(device)
    return {"step_s": step_s, "tokens_per_s": per_batch / step_s, "peak_mem_mb": peak, "peak_rise_mb": peak - base[0],
            "shape": shapes[-1] if shapes else None}


def model_flops_per_step(model, tokens: float, reference_forward: bool) -> float:
    """Approximate model FLOPs of one DPO step: 6·N per token for the policy's forward and backward,
    plus 2·N per token for the reference's forward when it runs (Kaplan et al., 2020)."""
    n = sum(p.numel() for p in model.parameters())
    return (6 + (2 if reference_forward else 0)) * n * tokens


def peak_flops(device) -> float | None:
    """The GPU's dense bf16/fp16 tensor-core peak, FLOP/s, when it is in :data:`PEAK_BF16_FLOPS`."""
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def _one_run(model_name: str, device: str, framework: str, precompute: bool, batch_size: int, steps: int,
             warmup: int, n_pairs: int, completion_words: int, precision: str, threads: int | None,
             vocab_size: int | None = None, seq_len: int | None = None, attn: str = "sdpa",
             compile: bool = False) -> dict:
    """One framework at one setting, meant to run in a fresh process so its peak memory is its own."""
    from dpo_lab.tokenizer import load_tokenizer

    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    tokenizer = load_tokenizer("course")
    pairs = bench_pairs(n_pairs, completion_words=completion_words, seq_len=seq_len, tokenizer=tokenizer)
    policy = make_model(model_name, tokenizer, vocab_size=vocab_size, attn=attn).to(dev)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    if compile:  # the bodies, in place: both frameworks call them
        policy.get_decoder().compile()
        reference.get_decoder().compile()
    kwargs = dict(batch_size=batch_size, steps=steps, warmup=warmup, precision=precision)
    if framework == "trl":
        result = trl_steps(policy, None if precompute else reference, tokenizer, pairs, precompute=precompute, **kwargs)
    else:
        chunk_size = DEFAULT_CHUNK_SIZE if framework == "dpo_lab" else None
        ref_logps = None
        if precompute:
            chosen, rejected, _ = encode_pairs(tokenizer, pairs, verbose=False)
            ref_logps = precompute_ref_logps(reference, tokenizer, chosen, rejected, batch_size=batch_size,
                                             precision=precision)
            reference = None
            gc.collect()
        result = dpo_lab_steps(policy, reference, tokenizer, pairs, ref_logps=ref_logps,
                               chunk_size=chunk_size, **kwargs)
        result.pop("step_times")  # the comparison table reports the median only
    result["mfu"] = None
    if dev.type == "cuda" and precision in ("bf16", "fp16"):
        tokens = result["tokens_per_s"] * result["step_s"]
        flops = model_flops_per_step(policy, tokens, reference_forward=not precompute)
        peak = peak_flops(dev)
        result["mfu"] = flops / result["step_s"] / peak if peak else None
    return result


def compare_with_trl(model_name: str = "tiny", device: str | None = None, batch_size: int = 8, steps: int = 20,
                     warmup: int = 3, n_pairs: int = 256, completion_words: int = 31, bf16: bool | None = None,
                     threads: int | None = None, precision: str | None = None, include_plain: bool = False,
                     vocab_size: int | None = None, seq_len: int | None = None, attn: str = "sdpa",
                     compile: bool = False) -> list[dict]:
    """dpo_lab against TRL, with a per-step reference and with precomputed reference log-probs.

    ``include_plain`` adds dpo_lab's plain full-logits path as a third row per setting.
    Each run happens in its own fresh process (``spawn``), so that its peak memory, on CPU
    the process's peak RSS, is its own and not the high-water mark of a run before it.
    ``speedup_vs_trl`` (TRL's time / dpo_lab's) and ``memory_ratio_vs_trl`` (dpo_lab's peak /
    TRL's) are given on each dpo_lab row.
    """
    import multiprocessing

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = _precision_name(precision, bf16, device)
    ctx = multiprocessing.get_context("spawn")
    frameworks = ("dpo_lab", "dpo_lab_plain", "trl") if include_plain else ("dpo_lab", "trl")
    rows = []
    for precompute in (False, True):
        results = {}
        for framework in frameworks:
            with ctx.Pool(1) as pool:
                results[framework] = pool.apply(_one_run, (model_name, device, framework, precompute, batch_size,
                                                           steps, warmup, n_pairs, completion_words, precision,
                                                           threads, vocab_size, seq_len, attn, compile))
        for framework, r in results.items():
            row = {"framework": framework, "reference": "precomputed" if precompute else "per step",
                   "model": model_name, "device": device, "precision": precision, "attn": attn,
                   "compile": compile, "batch_pairs": batch_size, **r}
            if framework != "trl":
                row["speedup_vs_trl"] = results["trl"]["step_s"] / r["step_s"]
                row["memory_ratio_vs_trl"] = r["peak_mem_mb"] / results["trl"]["peak_mem_mb"]
            rows.append(row)
    return rows


# --- one forward+backward of sequence_logprobs: what the chunked path saves -------------

def _logprobs_memory_run(chunked: bool, body: str, vocab_size: int, rows: int, seq_len: int, prompt_len: int,
                         threads: int | None, chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    if threads:
        torch.set_num_threads(threads)
    sizes = GPT2_SMALL if body == "gpt2" else {"n_layer": 2, "n_head": 4, "n_embd": 128, "n_positions": 1024}
    config = GPT2Config(vocab_size=vocab_size, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0, **sizes)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).train()
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, vocab_size, (rows, seq_len), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    completion_mask = torch.zeros_like(input_ids)
    completion_mask[:, prompt_len:] = 1
    gc.collect()
    base = reset_peak_memory(torch.device("cpu"))
    start = time.process_time()
    logps = sequence_logprobs(model, input_ids, attention_mask, completion_mask,
                              chunk_size=chunk_size if chunked else None)
    logps.sum().backward()
    seconds = time.process_time() - start
    return {"path": "chunked" if chunked else "plain", "chunk_size": chunk_size if chunked else None, "body": body,
            "vocab_size": vocab_size, "rows": rows, "seq_len": seq_len,
            "peak_rise_mb": peak_memory_mb(torch.device("cpu")) - base, "cpu_s": seconds,
            "counter": "VmHWM" if peak_rss_mb() is not None else "fallback"}


def logprobs_memory(body: str = "tiny", vocab_size: int = 50257, rows: int = 16, seq_len: int = 262,
                    prompt_len: int = 8, threads: int | None = None,
                    chunk_size: int = DEFAULT_CHUNK_SIZE) -> list[dict]:
    """Peak RSS rise of one forward+backward of :func:`sequence_logprobs` on a CPU, plain vs chunked.

    ``body``: ``"tiny"`` (2 layers, width 128) or ``"gpt2"`` (GPT-2 small), random weights, at
    ``vocab_size``; ``rows`` sequences of ``seq_len`` tokens whose last ``seq_len - prompt_len``
    are scored, the chunked path ``chunk_size`` positions at a time. Each path runs in a fresh
    process; the rise is the kernel's peak RSS (reset just before) minus the RSS then, so it
    counts everything the step allocated: activations, the logits or their chunks, and the
    parameters' gradients.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = []
    for chunked in (False, True):
        with ctx.Pool(1) as pool:
            out.append(pool.apply(_logprobs_memory_run, (chunked, body, vocab_size, rows, seq_len, prompt_len,
                                                         threads, chunk_size)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time a DPO training step: dpo_lab against TRL's DPOTrainer.")
    parser.add_argument("--model", choices=["tiny", "gpt2"], default="tiny")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs a step")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--completion-words", type=int, default=31,
                        help="tokens a completion (synthetic one-token words); prompts are 12")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens a sequence (default: set by the words)")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help="vocabulary of the model (default: the course tokenizer's for tiny, 50257 for gpt2)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None,
                        help="default: bf16 where native (CUDA >= 8.0), fp16 on older CUDA, fp32 on CPU")
    parser.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa", help="attention, for both frameworks")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model body, for both frameworks")
    parser.add_argument("--no-plain", action="store_true", help="skip dpo_lab's plain full-logits path")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's)")
    parser.add_argument("--logprobs-memory", action="store_true",
                        help="instead: peak RSS rise of one forward+backward of sequence_logprobs, plain vs chunked "
                             "(CPU; --model picks the body, --vocab-size and --seq-len the shape, --batch-size rows)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.logprobs_memory:
        out = logprobs_memory(args.model, args.vocab_size or 50257, rows=args.batch_size, seq_len=args.seq_len or 262,
                              threads=args.threads)
        for r in out:
            print(f"{r['path']:8} body {r['body']:5} vocab {r['vocab_size']:6} {r['rows']} x {r['seq_len']} tokens: "
                  f"peak RSS rise {r['peak_rise_mb']:7.0f} MiB ({r['counter']}), {r['cpu_s']:.2f} CPU s")
        print(f"chunked / plain: {out[1]['peak_rise_mb'] / out[0]['peak_rise_mb']:.2f}")
        return 0
    rows = compare_with_trl(args.model, args.device, args.batch_size, args.steps, args.warmup,
                            completion_words=args.completion_words, threads=args.threads, precision=args.precision,
                            include_plain=not args.no_plain, vocab_size=args.vocab_size, seq_len=args.seq_len,
                            attn=args.attn, compile=args.compile)
    print(f"{'framework':13} {'reference':12} {'shape':>11} {'s/step':>8} {'tokens/s':>10} {'peak MiB':>9} "
          f"{'rise MiB':>9} {'MFU':>6}  ratio (TRL time / dpo_lab time; dpo_lab peak / TRL peak)")
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "-"
        ratio = (f"  speed x{r['speedup_vs_trl']:.2f}, memory x{r['memory_ratio_vs_trl']:.2f}"
                 if "speedup_vs_trl" in r else "")
        print(f"{r['framework']:13} {r['reference']:12} {str(r['shape']):>11} {r['step_s']:8.4f} "
              f"{r['tokens_per_s']:10.0f} {r['peak_mem_mb']:9.0f} {r['peak_rise_mb']:9.0f} {mfu:>6}{ratio}")
    first = rows[0]
    print(f"model {first['model']}, device {first['device']}, {first['precision']}, attention {first['attn']}, "
          f"compile {'on' if first['compile'] else 'off'} (both), {first['batch_pairs']} pairs a step; each run in its "
          "own process. Peak: CUDA max allocated, or on CPU the kernel's peak RSS (VmHWM) after a reset before the "
          "steps; rise: above the level at that reset.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
