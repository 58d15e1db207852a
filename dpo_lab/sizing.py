"""Will a notebook's full profile fit on a Colab T4? Its peak memory, computed without allocating it.

The GPU peak of a stage is the sum of the bytes of every tensor alive at its worst moment:

    peak = resident models (weights the notebook still holds, and their .grad)
           + the stage's own step: its model(s), activations kept for backward, gradients,
             AdamW's two moments, and the temporaries of the worst op

The step is not guessed from a formula: the course's own code (``dpo_batch_loss``,
``sequence_logprobs``, ``train_reward_model``'s loss, RLOO's policy-gradient loss, ``token_kl``,
the diffusion loss) runs one forward, backward and optimizer step, twice, on the model built at
its real size, under PyTorch's ``FakeTensorMode``: every tensor has its shape, dtype and device
but no memory, so a 24-layer DeBERTa costs a few seconds of Python and no RAM. :class:`PeakMemory`,
a ``TorchDispatchMode``, sees every op, adds the bytes of each new storage and subtracts them
when the storage is freed, and keeps the maximum.

Why our own tracker and not ``torch.distributed._tools.mem_tracker.MemTracker`` (which does the
same under fake mode): it is 40 lines a learner can read, it needs no module hooks, and it
answers the two data-dependent ops fake tensors cannot (``nonzero``: its worst case, every
element selected; ``.item()``: True for a boolean, so checks pass, and 0 for a number, so the
gradient scaler finds no overflow and steps).

The T4's precision is modelled on the CPU: fp16 autocast (``torch.autocast("cpu", float16)``,
since a CPU build cannot autocast CUDA tensors), fp32 weights and AdamW moments, fp32
chunked log-probs, as :mod:`dpo_lab.precision` decides for a T4.

Sampling (``generate`` with a KV cache) has data-dependent stops, so it is estimated
analytically: weights + KV cache 2 x layers x rows x tokens x hidden x 4 bytes (it runs in
fp32: ``sample`` is called outside autocast) + one step's fp32 logits (three copies: logits,
scaled, softmax).

Host RAM: the Python process with torch, transformers and datasets imported (measured:
:data:`BASE_PROCESS_GIB`), plus the CUDA libraries and context (:data:`CUDA_HOST_GIB`, an
assumption), plus twice the largest model's fp32 weights (``from_pretrained`` reads the file and
builds the model on the CPU before ``.to("cuda")``), plus the token ids kept as Python lists.

Time: ``2 N`` FLOPs a token forward and ``6 N`` for training (Kaplan et al., 2020), at
:data:`T4_FP16_FLOPS` x :data:`MFU`; a sampling step reads the weights and the KV cache once
at :data:`T4_BANDWIDTH` x :data:`BANDWIDTH_UTILISATION`.

``python -m dpo_lab.sizing`` prints the table of every notebook's full profile.
"""

from __future__ import annotations

import functools
import math
import weakref
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

GIB = 2**30
#: what a notebook may use on a T4 (15 GiB; the rest is the CUDA context and fragmentation)
GPU_BUDGET_GIB = 14.0
#: Colab's host RAM is ~12.7 GB; the rest is the OS and Jupyter
HOST_BUDGET_GIB = 11.0
#: peak RSS of a Python process after importing torch, transformers and datasets (measured, Linux, torch 2.13)
BASE_PROCESS_GIB = 0.35
#: host memory the CUDA runtime, cuBLAS/cuDNN kernels and the context add (an assumption: 1.5-2.5 GB is usual)
CUDA_HOST_GIB = 2.0
#: bytes a token id costs in a Python list (an 8-byte pointer; ids above 256 are 28-byte int objects)
PY_TOKEN_BYTES = 36
T4_FP16_FLOPS = 65e12  # tensor-core peak
T4_BANDWIDTH = 320e9  # bytes/s
MFU = 0.25  # assumed share of the peak these small models reach (20-30% is usual)
BANDWIDTH_UTILISATION = 0.6  # assumed share of the bandwidth a sampling step reaches


# --- the tracker ----------------------------------------------------------------------------

class PeakMemory(TorchDispatchMode):
    """Counts the bytes of live tensor storages over every op run under it; ``peak`` is their maximum.

    A storage is counted once, when an op first returns a tensor on it, and uncounted when
    Python frees it (a weak reference's callback). Works on real and on fake tensors alike.
    """

    def __init__(self):
        super().__init__()
        self.now = self.peak = 0
        self._live = {}

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._live:
            return
        size = storage.nbytes()
        self._live[key] = weakref.ref(storage, functools.partial(self._free, key, size))
        self.now += size
        self.peak = max(self.peak, self.now)

    def _free(self, key, size, _ref):
        if self._live.pop(key, None) is not None:
            self.now -= size

    def reset_peak(self) -> None:
        self.peak = self.now

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            out = func(*args, **kwargs)
        except DataDependentOutputException:  # a fake tensor's value was asked for
            if func is torch.ops.aten._local_scalar_dense.default:
                # .item(): a boolean reads True (a mask is all ones, a check passes), a number 0
                # (the gradient scaler found no overflow)
                return args[0].dtype == torch.bool
            raise
        except DynamicOutputShapeException:  # nonzero: take the worst case, every element selected
            mask = args[0]
            out = torch.empty((mask.numel(), mask.dim()), dtype=torch.long, device=mask.device)
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self.track(value)
        return out


def fake_mode():
    """A ``FakeTensorMode`` for building models at their real size with no memory behind them."""
    return FakeTensorMode(allow_non_fake_inputs=True)


# --- the models of the full profile, at their real sizes --------------------------------------
# No Hub access here: the sizes below are written down from the public model cards / config.json.

MODELS = {
    # GPT2Config() defaults: 124M parameters
    "gpt2": ("gpt2", dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)),
    # the GPT-2 architecture with a 32,768-token code vocabulary: ~110M
    "codeparrot/codeparrot-small": ("gpt2", dict(vocab_size=32768, n_positions=1024, n_embd=768, n_layer=12,
                                                 n_head=12, bos_token_id=0, eos_token_id=0)),
    # DistilBertConfig defaults, 2 labels: ~67M
    "lvwerra/distilbert-imdb": ("distilbert", dict(num_labels=2)),
    # DeBERTa-v3-large: hidden 1024, 24 layers, 16 heads, 128,100-token vocabulary, 1 label: ~435M
    "OpenAssistant/reward-model-deberta-v3-large-v2": ("deberta-v2", dict(
        vocab_size=128100, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        max_position_embeddings=512, type_vocab_size=0, relative_attention=True, position_buckets=256,
        norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
        max_relative_positions=-1, layer_norm_eps=1e-7, num_labels=1)),
}


def build_model(name: str):
    """The model ``name`` at its real size (call it under :func:`fake_mode`: no memory then)."""
    from transformers import (
        DebertaV2Config,
        DebertaV2ForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
    )

    if name.startswith("unet"):
        from dpo_lab.denoisers import build_denoiser

        return build_denoiser("unet", image_shape=(1, 28, 28), base=int(name.split(":")[1]))
    kind, sizes = MODELS[name]
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(**sizes))
    if kind == "distilbert":
        return DistilBertForSequenceClassification(DistilBertConfig(**sizes))
    return DebertaV2ForSequenceClassification(DebertaV2Config(**sizes))


@functools.cache
def model_facts(name: str) -> dict:
    """Parameter count, fp32 bytes (parameters and buffers), layers, width and vocabulary of ``name``."""
    with fake_mode():
        model = build_model(name)
    config = getattr(model, "config", None)
    return {"params": sum(p.numel() for p in model.parameters()),
            "bytes": sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]),
            "layers": getattr(config, "num_hidden_layers", 0), "hidden": getattr(config, "hidden_size", 0),
            "vocab": getattr(config, "vocab_size", 0)}


# --- one step of the course's code, traced ---------------------------------------------------

def _batch(rows: int, length: int, prompt: int, vocab: int) -> dict:
    """A padded batch of ``rows`` sequences of ``length`` tokens, the first ``prompt`` of them prompt."""
    completion = torch.zeros(rows, length, dtype=torch.long)
    completion[:, prompt:] = 1
    return {"input_ids": torch.randint(0, vocab, (rows, length)),
            "attention_mask": torch.ones(rows, length, dtype=torch.long), "completion_mask": completion}


def _train_loss(what: str, model, batch: dict):
    """The loss a training loop of the course computes on one (micro-)batch."""
    from dpo_lab.logprobs import sequence_logprobs
    from dpo_lab.reward_model import bradley_terry_loss
    from dpo_lab.rloo import rloo_loss
    from dpo_lab.train import dpo_batch_loss

    if what == "ddpm":  # diffusion: the denoising loss on a batch of images
        from dpo_lab.diffusion import ddpm_loss, linear_schedule

        return ddpm_loss(model, batch["images"], batch["labels"], linear_schedule(200))
    half = batch["input_ids"].shape[0] // 2
    if what == "sft":  # train_sft
        return -sequence_logprobs(model, **batch).sum() / batch["completion_mask"].sum()
    if what == "dpo":  # train_dpo: chosen and rejected rows in one pass
        ref = torch.zeros(half)
        return dpo_batch_loss(model, batch, ref, ref, beta=0.1)[0]
    if what == "rloo":  # train_rloo: the policy's log-probs with gradient, advantages held constant
        logps = sequence_logprobs(model, **batch)
        return rloo_loss(logps, torch.zeros_like(logps))
    if what == "rm":  # train_reward_model: r(x, y) on chosen and rejected rows in one pass
        rewards = model(batch["input_ids"], batch["attention_mask"])
        return bradley_terry_loss(rewards[:half], rewards[half:], 0.01).mean()
    raise ValueError(f"unknown training step {what!r}")


@functools.cache
def trace_step(what: str, model_name: str, rows: int, length: int, prompt: int = 0, fp16: bool = True) -> int:
    """Peak bytes of an optimizer step of ``what`` on ``rows`` x ``length`` tokens (model included).

    AdamW creates its two moments at its first step, so they are made first (a step on zero
    gradients): the traced step then holds weights, moments, gradients and activations together.
    AdamW is the multi-tensor (``foreach``) one, PyTorch's default on CUDA, with its temporaries.
    """
    from dpo_lab.precision import Precision, backward_and_step

    precision = Precision("fp16" if fp16 else "fp32", "cpu")
    tracker = PeakMemory()
    with fake_mode(), tracker:
        model = build_model(model_name)
        if what == "rm":  # reward_model_from_lm without its copy: the LM it copies is counted as resident
            from dpo_lab.reward_model import RewardModel

            model = RewardModel(model.base_model, model.config.hidden_size)
        if what == "ddpm":
            batch = {"images": torch.randn(rows, 1, 28, 28), "labels": torch.randint(0, 10, (rows,))}
        else:
            batch = _batch(rows, length, prompt, model_facts(model_name)["vocab"])
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, foreach=True)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
        model.train()
        with precision.autocast():
            loss = _train_loss(what, model, batch)
        backward_and_step(loss, optimizer, model.parameters(), 1.0, precision.grad_scaler())
    return tracker.peak


@functools.cache
def trace_inference(what: str, model_names: tuple, rows: int, length: int, prompt: int = 0,
                    fp16: bool = False) -> int:
    """Peak bytes of a no-grad pass (models included): ``"logprobs"`` (``sequence_logprobs``),
    ``"token_kl"`` (``token_kl`` of a policy and its reference), ``"reward"`` (a reward model's
    scores), ``"classify"`` (a sequence
    classifier, as the gold/judge rewards call it) or ``"denoise"`` (one denoiser call)."""
    from dpo_lab.logprobs import sequence_logprobs, token_kl
    from dpo_lab.precision import Precision

    precision = Precision("fp16" if fp16 else "fp32", "cpu")
    tracker = PeakMemory()
    with fake_mode(), tracker, torch.no_grad():
        models = [build_model(name).eval() for name in model_names]
        if what == "denoise":
            with precision.autocast():
                models[0](torch.randn(rows, 1, 28, 28), torch.randint(0, 200, (rows,)), torch.randint(0, 10, (rows,)))
            return tracker.peak
        batch = _batch(rows, length, prompt, model_facts(model_names[0])["vocab"])
        with precision.autocast():
            if what == "logprobs":
                sequence_logprobs(models[0], **batch)
            elif what == "token_kl":
                token_kl(models[0], models[1], **batch)
            elif what == "reward":  # a RewardModel on the LM's body, as RewardScorer calls it
                from dpo_lab.reward_model import RewardModel

                RewardModel(models[0].base_model, models[0].config.hidden_size)(batch["input_ids"],
                                                                                batch["attention_mask"])
            elif what == "classify":
                models[0](input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            else:
                raise ValueError(f"unknown pass {what!r}")
    return tracker.peak


def sampling_bytes(model_name: str, rows: int, prompt: int, new_tokens: int) -> int:
    """Sampling with a KV cache, analytically (its stops depend on the values sampled): the model,
    its fp32 KV cache at the last step (plus one layer's copy while ``torch.cat`` grows it) and one
    step's fp32 logits (logits, scaled, softmax)."""
    facts = model_facts(model_name)
    tokens = prompt + new_tokens
    kv_layer = 2 * rows * tokens * facts["hidden"] * 4
    return facts["bytes"] + (facts["layers"] + 1) * kv_layer + 3 * rows * facts["vocab"] * 4


# --- stages ----------------------------------------------------------------------------------

@dataclass
class Stage:
    """One stage of a notebook: what runs (``op``), and what else the notebook keeps on the GPU.

    ``op`` is ``(kind, arguments)`` with kind ``"train"`` (:func:`trace_step`), ``"infer"``
    (:func:`trace_inference`) or ``"sample"`` (:func:`sampling_bytes`); it counts its own model(s).
    ``resident`` lists the other models held, as ``(model, copies)`` (see :func:`resident_bytes`):
    a trained policy the notebook keeps still holds its ``.grad``.
    ``train_tokens``, ``forward_tokens`` (per model pass) and ``sample_steps`` feed the time estimate.
    """

    notebook: str
    name: str
    op: tuple
    resident: list = field(default_factory=list)
    host_extra_gib: float = 0.0
    largest_model: str = "gpt2"
    train_tokens: float = 0.0
    forward_tokens: list = field(default_factory=list)  # (model, tokens)
    sample_steps: list = field(default_factory=list)  # (model, decoding steps, rows, tokens at the end)
    flops: float = 0.0  # FLOPs counted directly (notebook 06's UNet: no 2N-a-token rule for convolutions)


def resident_bytes(entries) -> int:
    """Bytes of ``(model, copies)`` entries: copies of its fp32 weights' size (1: the weights; 2: and
    their .grad; 4: and AdamW's two moments; 3: grads and moments of a model the op counts)."""
    return sum(model_facts(name)["bytes"] * copies for name, copies in entries)


def gpu_bytes(stage: Stage) -> int:
    kind, args = stage.op
    if kind == "train":
        own = trace_step(*args)
    elif kind == "infer":
        own = trace_inference(*args)
    else:
        own = sampling_bytes(*args)
    return own + resident_bytes(stage.resident)


def host_bytes(stage: Stage) -> int:
    weights = model_facts(stage.largest_model)["bytes"]
    return int((BASE_PROCESS_GIB + CUDA_HOST_GIB + stage.host_extra_gib) * GIB + 2 * weights)


def seconds(stage: Stage) -> float:
    """T4 seconds of a stage: training and scoring FLOPs at MFU; sampling at the memory bandwidth."""
    flops = 0.0
    for name, tokens in ([(stage.op[1][1], stage.train_tokens)] if stage.train_tokens else []):
        flops += 6 * model_facts(name)["params"] * tokens
    for name, tokens in stage.forward_tokens:
        flops += 2 * model_facts(name)["params"] * tokens
    total = (flops + stage.flops) / (T4_FP16_FLOPS * MFU)
    for name, steps, rows, tokens in stage.sample_steps:
        facts = model_facts(name)
        kv = 2 * facts["layers"] * rows * tokens / 2 * facts["hidden"] * 4  # the mean cache over the steps
        total += steps * (facts["bytes"] + kv) / (T4_BANDWIDTH * BANDWIDTH_UTILISATION)
    return total


# --- the notebooks' stages -------------------------------------------------------------------
# Lengths the configs do not state, from the data (tokens of the full profile's tokenizers):
SENTIMENT_PROMPT = 8  # 2 to 5 words of an IMDb review
CODE_PROMPT = 160  # an MBPP prompt: the task's text and its test asserts
SUMMARY_PROMPT = 560  # a TL;DR post with its subreddit and title header (the longest are cut at max_length)
SMS_PROMPT = 64  # an SMS message in the moderation prompt


def _default_batch(function) -> int:
    """The ``batch_size`` default of one of the course's functions (read, not copied, so it cannot drift)."""
    import inspect

    return inspect.signature(function).parameters["batch_size"].default


def _course_batches() -> tuple[int, int, int]:
    from dpo_lab.evaluate import sample
    from dpo_lab.reward_model import RewardScorer
    from dpo_lab.train import precompute_ref_logps

    return _default_batch(sample), _default_batch(precompute_ref_logps), _default_batch(RewardScorer.__init__)


# evaluate.sample's batch (and score_samples', token_kl_samples'), precompute_ref_logps' pairs a
# batch, RewardScorer's batch
SAMPLE_BATCH, REF_BATCH, RM_SCORE_BATCH = _course_batches()


def _micro(cfg, stage):
    """Rows a forward pass of ``stage`` sees: its micro-batch when the config sets one, else its batch."""
    return cfg.get(f"{stage}_micro_batch") or cfg[f"{stage}_batch_size"]


def sentiment_stages(nb, cfg, extra=()):
    """Notebooks 02, 03, 07, 08 share this pipeline: gold classifier, SFT on IMDb, sampled pairs, DPO."""
    m, gold, new = cfg["model"], [(cfg["gold"], 1)], cfg["max_new_tokens"]
    p, seq, n_pairs = SENTIMENT_PROMPT, SENTIMENT_PROMPT + new + 1, cfg["n_train_prompts"]
    n_samples = cfg["n_train_prompts"] * cfg["samples_per_prompt"]
    return [
        Stage(nb, "SFT", ("train", ("sft", m, _micro(cfg, "sft"), cfg["max_length"])), gold,
              train_tokens=cfg["n_sft_reviews"] * cfg["sft_epochs"] * cfg["max_length"]),
        Stage(nb, "sample pairs", ("sample", (m, SAMPLE_BATCH, p, new)), gold,
              sample_steps=[(m, new * n_samples / SAMPLE_BATCH, SAMPLE_BATCH, p + new)],
              forward_tokens=[(cfg["gold"], n_samples * seq)]),
        Stage(nb, "reference log-probs", ("infer", ("logprobs", (m,), 2 * REF_BATCH, seq, p, True)), gold,
              forward_tokens=[(m, 2 * n_pairs * seq)]),
        *extra,
    ]


def dpo_stages(nb, cfg, model, seq, prompt, new, others, runs, n_pairs, kept, evals_per_run, eval_rows):
    """``runs`` DPO trainings of a copy of the SFT model (which stays), each evaluated at its checkpoints
    (sample, token KL to the SFT model) while its optimizer is alive; ``kept`` earlier policies (weights
    and .grad: ``train_dpo`` leaves them set) stay referenced by the notebook; ``others``: the rest."""
    held = [*others, *[(model, 2)] * kept]
    rows = cfg["dpo_batch_size"]
    steps = runs * math.ceil(n_pairs / rows * cfg.get("dpo_epochs", 1))
    n_evals = runs * evals_per_run
    return [
        Stage(nb, f"DPO (batch {rows}, {2 * _micro(cfg, 'dpo')} rows a pass)",
              ("train", ("dpo", model, 2 * _micro(cfg, "dpo"), seq, prompt)), [(model, 1), *held],
              train_tokens=steps * 2 * rows * seq),
        Stage(nb, "DPO checkpoint: sample", ("sample", (model, SAMPLE_BATCH, prompt, new)),
              [(model, 1 + 3), *held],
              sample_steps=[(model, n_evals * new * math.ceil(eval_rows / SAMPLE_BATCH), SAMPLE_BATCH, prompt + new)]),
        Stage(nb, "DPO checkpoint: token KL", ("infer", ("token_kl", (model, model), SAMPLE_BATCH, seq, prompt)),
              [(model, 3), *held], forward_tokens=[(model, 2 * n_evals * eval_rows * seq)]),
    ]


def rm_stages(nb, cfg, model, seq, resident, n_pairs, score_rows):
    """Reward-model training (a copy of the SFT body and a head), then scoring texts with it."""
    rows = cfg["rm_batch_size"]
    steps = math.ceil(n_pairs / rows * cfg["rm_epochs"])
    return [
        Stage(nb, f"reward model (batch {rows}, {2 * _micro(cfg, 'rm')} rows a pass)",
              ("train", ("rm", model, 2 * _micro(cfg, "rm"), seq)), resident, train_tokens=steps * 2 * rows * seq),
        Stage(nb, "reward model: score", ("infer", ("reward", (model,), cfg.get("rm_score_batch") or RM_SCORE_BATCH,
                                                     seq)),
              [(model, 1), *resident], forward_tokens=[(model, score_rows * seq)]),
    ]


def rloo_stages(nb, cfg, model, prompt, new, resident, runs, reward_model=None):
    """RLOO: each step samples k completions a prompt (optimizer alive), scores them with the
    reference, and takes a policy-gradient step on all of them."""
    rows = cfg["rloo_prompts_per_step"] * cfg["rloo_k"]
    micro = cfg.get("rloo_micro_batch") or rows
    seq = prompt + new + 1
    steps = runs * cfg["rloo_steps"]
    held = [(model, 1), *resident]  # the SFT reference, reward models, earlier policies
    return [
        Stage(nb, f"RLOO sample ({rows} rows)", ("sample", (model, rows, prompt, new)), [(model, 3), *held],
              sample_steps=[(model, steps * new, rows, prompt + new)],
              forward_tokens=[(model, 2 * steps * rows * seq)] + ([(reward_model, steps * rows * seq)]
                                                                  if reward_model else [])),
        Stage(nb, f"RLOO step ({micro} rows a pass)", ("train", ("rloo", model, micro, seq, prompt)), held,
              train_tokens=steps * rows * seq),
    ]


def notebook_stages(nb: str, cfg: dict) -> list[Stage]:
    """The stages of notebook ``nb`` ("02" ... "09") under config ``cfg`` (its full profile)."""
    return _NOTEBOOKS[nb](cfg)


def _nb02(cfg, nb="02"):
    m, new, p = cfg["model"], cfg["max_new_tokens"], SENTIMENT_PROMPT
    gold, runs = [(cfg["gold"], 1)], len(cfg["betas"])
    evals = cfg["n_eval_prompts"] * cfg["eval_samples"]
    return sentiment_stages(nb, cfg) + dpo_stages(nb, cfg, m, p + new + 1, p, new, gold, runs, cfg["n_train_prompts"],
                                                  runs - 1, cfg["checkpoints"] + 1, evals)


def _nb03(cfg):
    m, new, p = cfg["model"], cfg["max_new_tokens"], SENTIMENT_PROMPT
    seq, gold, runs = p + new + 1, [(cfg["gold"], 1)], len(cfg["betas"])
    evals = cfg["n_eval_prompts"] * cfg["eval_samples"]
    dpo_kept = [(m, 2)] * runs
    n_bon = cfg["n_eval_prompts"] * max(cfg["bon_ns"])
    after_rm = [*gold, *dpo_kept, (m, 2)]  # the reward model keeps its .grad too
    rloo = [(m, 2)] * (len(cfg["rloo_kl_coefs"]))  # the policies rloo_runs keeps, before the last run
    return [*_nb02(cfg, "03"),
            *rm_stages("03", cfg, m, seq, [(m, 1), *gold, *dpo_kept], cfg["n_train_prompts"],
                       cfg["n_heldout_prompts"] * cfg["samples_per_prompt"]),
            Stage("03", f"best-of-{max(cfg['bon_ns'])} sample", ("sample", (m, SAMPLE_BATCH, p, new)),
                  [(m, 1), *after_rm], sample_steps=[(m, new * n_bon / SAMPLE_BATCH, SAMPLE_BATCH, p + new)],
                  forward_tokens=[(m, n_bon * seq), (cfg["gold"], n_bon * seq)]),
            *rloo_stages("03", cfg, m, p, new, [*after_rm, *rloo], len(cfg["rloo_kl_coefs"]) + 1, reward_model=m),
            Stage("03", "RLOO eval: token KL", ("infer", ("token_kl", (m, m), SAMPLE_BATCH, seq, p)),
                  [(m, 3), *after_rm, *rloo], forward_tokens=[(m, 2 * 4 * 3 * evals * seq)])]


def _nb04(cfg):
    m, new, p = cfg["model"], cfg["max_new_tokens"], CODE_PROMPT
    seq = p + new + 1
    n_tasks, n_pair = cfg["n_train_tasks"], cfg["pair_samples"]
    evals = cfg["n_heldout_tasks"] * cfg["eval_samples"]
    n_pairs = n_tasks * cfg["pairs_per_task"]
    variants = 3  # dpo, dpo_nll, ipo, each kept in `policies`
    kept = [(m, 2)] * variants
    sft_rows = n_tasks * cfg["sft_per_task"]
    return [
        Stage("04", "SFT", ("train", ("sft", m, _micro(cfg, "sft"), seq, p)), [],
              train_tokens=sft_rows * cfg["sft_epochs"] * seq),
        Stage("04", "sample pairs and evaluations", ("sample", (m, SAMPLE_BATCH, p, new)), [(m, 1)],
              sample_steps=[(m, new * (n_tasks * n_pair + 6 * evals) / SAMPLE_BATCH, SAMPLE_BATCH, p + new)]),
        Stage("04", "reference log-probs", ("infer", ("logprobs", (m,), 2 * REF_BATCH, seq, p, True)), [(m, 1)],
              forward_tokens=[(m, 3 * 2 * n_pairs * seq)]),
        *dpo_stages("04", cfg, m, seq, p, new, [], variants, n_pairs, variants - 1, 1, evals),
        *rm_stages("04", cfg, m, seq, [(m, 1), *kept], n_pairs, 3 * evals),
        *rloo_stages("04", cfg, m, p, new, [*kept, (m, 2)], 2, reward_model=m)[:2],
        Stage("04", "RLOO eval: token KL", ("infer", ("token_kl", (m, m), SAMPLE_BATCH, seq, p)),
              [*kept, (m, 2), (m, 2)], forward_tokens=[(m, 2 * 2 * evals * seq)]),
    ]


def _nb05(cfg):
    m, new, judge = cfg["model"], cfg["max_new_tokens"], cfg["judge"]
    length = cfg["max_length"]
    p = min(SUMMARY_PROMPT, length - new - 1)
    seq = length
    n_pairs = n_docs = cfg["n_pref_docs"]
    res = [(judge, 1)]
    ids_gib = lambda n_seqs: n_seqs * seq * PY_TOKEN_BYTES / GIB  # noqa: E731  token ids kept as Python lists
    runs = len(cfg["betas"])
    kept = [(m, 2)] * runs
    n_eval = cfg["n_eval_docs"]
    eval_samples = n_eval * (len(cfg["temperatures"]) * (runs + 2) + (len(cfg["temperatures"]) - 1) * cfg["bon_n"])
    stages = [
        Stage("05", "SFT", ("train", ("sft", m, _micro(cfg, "sft"), seq, p)), res, host_extra_gib=ids_gib(n_docs),
              largest_model=judge, train_tokens=cfg["n_sft_docs"] * cfg["sft_epochs"] * seq),
        Stage("05", "reference log-probs", ("infer", ("logprobs", (m,), 2 * REF_BATCH, seq, p, True)), res,
              host_extra_gib=ids_gib(2 * n_pairs), largest_model=judge, forward_tokens=[(m, 2 * n_pairs * seq)]),
        *dpo_stages("05", cfg, m, seq, p, new, res, runs, n_pairs, runs - 1, 0, 0),
        *rm_stages("05", cfg, m, seq, [(m, 1), *res, *kept], n_pairs, 2 * n_eval),
        *rloo_stages("05", cfg, m, p, new, [*res, *kept, (m, 2)], 1, reward_model=m),
        Stage("05", "evaluation: sample", ("sample", (m, SAMPLE_BATCH, p, new)), [(m, 1), *res, *kept, (m, 2), (m, 2)],
              sample_steps=[(m, new * eval_samples / SAMPLE_BATCH, SAMPLE_BATCH, p + new)]),
        Stage("05", "evaluation: judge", ("infer", ("classify", (judge,), 32, 512)),
              [(m, 1), *kept, (m, 2), (m, 2)], largest_model=judge,
              forward_tokens=[(judge, (eval_samples + 2 * cfg["rloo_steps"] * 64) * 512)]),
    ]
    for stage in stages:
        stage.largest_model = judge
        stage.host_extra_gib = max(stage.host_extra_gib, ids_gib(2 * n_pairs))  # the encoded pairs stay
    return stages


@functools.cache
def unet_forward_flops(base: int) -> float:
    """FLOPs of one UNet forward pass on one 28x28 image, counted by PyTorch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    from dpo_lab.denoisers import build_denoiser

    model = build_denoiser("unet", image_shape=(1, 28, 28), base=base)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    return float(counter.get_total_flops())


def _nb06(cfg):
    base, batch = cfg["denoiser"]["base"], cfg["ddpm_batch"]
    unet = f"unet:{base}"
    n_eval = 10 * cfg["eval_per_class"]
    images_gib = 70_000 * 28 * 28 * 4 / GIB  # MNIST as float32 tensors
    # Time, in UNet forward passes of one image (a training pass counts 3: forward and backward).
    # Runs: the headline run, the beta sweep and the cautionary high-lr run; each is evaluated once
    # (n_eval images x T steps) and the headline run is tracked every `track_every` steps.
    f, T = unet_forward_flops(base), cfg["T"]
    runs = 2 + len(cfg["beta_sweep"])
    tracks = cfg["dpo_steps"] // cfg["track_every"]
    stages = [
        Stage("06", f"DDPM training (batch {batch})", ("train", ("ddpm", unet, batch, 0)), [],
              flops=3 * f * cfg["ddpm_steps"] * batch),
        Stage("06", f"Diffusion-DPO (batch {cfg['dpo_batch']} pairs)",
              ("train", ("ddpm", unet, 2 * cfg["dpo_batch"], 0)), [(unet, 1)] * 6,
              flops=4 * f * runs * cfg["dpo_steps"] * 2 * cfg["dpo_batch"]),  # policy forward+backward, reference
        Stage("06", f"sampling ({n_eval} images)", ("infer", ("denoise", (unet,), n_eval, 0)), [(unet, 2)] * 6,
              flops=f * T * (2 * 10 * cfg["pairs_per_class"] + (1 + runs) * n_eval
                             + tracks * 10 * cfg["track_per_class"])),
    ]
    for stage in stages:
        stage.largest_model, stage.host_extra_gib = "gpt2", images_gib  # no Hub model: a GPT-2 is a generous bound
    return stages


def _nb07(cfg):
    m, new, p = cfg["model"], cfg["max_new_tokens"], SENTIMENT_PROMPT
    seq, gold = p + new + 1, [(cfg["gold"], 1)]
    knobs = cfg["_efficiency"]
    steps = 4 * knobs["steps"]  # ref_copy, precomputed_ref, lora, precomputed_ref + fp16
    return [*sentiment_stages("07", cfg),
            Stage("07", f"DPO set-ups (batch {knobs['batch_size']}, reference copy)",
                  ("train", ("dpo", m, 2 * knobs["batch_size"], seq, p)), [(m, 1), (m, 1), *gold],
                  train_tokens=steps * 2 * knobs["batch_size"] * seq)]


def _nb08(cfg):
    m, new, p = cfg["model"], cfg["max_new_tokens"], SENTIMENT_PROMPT
    seq, gold = p + new + 1, [(cfg["gold"], 1)]
    long_seq = cfg["offpolicy_max_length"]
    n_runs = sum(len(v[2]) for v in cfg["variants"].values()) + len(cfg["flip_rates"]) * len(cfg["noise_losses"])
    steps = n_runs * cfg["steps"] + 3 * cfg["overopt_steps"] + 2 * cfg["steps"]
    kept = [(m, 2)] * 4  # the main DPO policy and the three long runs' policies
    evals = cfg["n_eval_prompts"] * cfg["eval_samples"]
    cfg = dict(cfg, dpo_batch_size=cfg["batch_size"], dpo_micro_batch=cfg.get("dpo_micro_batch"))
    return [*sentiment_stages("08", cfg),
            *dpo_stages("08", cfg, m, seq, p, new, gold, 1, cfg["batch_size"] * steps, 3,
                        0, evals)[1:],
            Stage("08", f"off-policy DPO ({long_seq} tokens, batch {cfg['batch_size']})",
                  ("train", ("dpo", m, 2 * _micro(cfg, "dpo"), long_seq, p)), [(m, 1), *gold, *kept],
                  train_tokens=2 * cfg["batch_size"] * (steps * seq + 2 * cfg["steps"] * long_seq),
                  sample_steps=[(m, new * steps / cfg["probe_every"] * math.ceil(evals / SAMPLE_BATCH) / 4,
                                 SAMPLE_BATCH, p + new)])]


def _nb09(cfg):
    m, new, p = cfg["model"], cfg["max_new_tokens"], SMS_PROMPT
    seq = p + new + 1
    n_pairs = cfg["n_prefs"]
    # one DPO run, and its controls on the same pairs for the same steps (SFT on the chosen verdicts, a
    # classifier head on the prompts), each lighter than a DPO run: sized as a second run
    runs = 2
    n_samples = n_pairs * cfg["samples_per_prompt"] + cfg["n_test"] * (3 + cfg["rerank_n"])
    return [
        Stage("09", "SFT", ("train", ("sft", m, _micro(cfg, "sft"), seq, p)), [],
              train_tokens=cfg["n_sft"] * cfg["sft_epochs"] * seq),
        Stage("09", "sample verdicts", ("sample", (m, SAMPLE_BATCH, p, new)), [(m, 1)],
              sample_steps=[(m, new * n_samples / SAMPLE_BATCH, SAMPLE_BATCH, p + new)]),
        Stage("09", "reference log-probs", ("infer", ("logprobs", (m,), 2 * REF_BATCH, seq, p, True)), [(m, 1)],
              forward_tokens=[(m, 3 * 2 * n_pairs * seq)]),
        *dpo_stages("09", cfg, m, seq, p, new, [], runs, n_pairs, 1, 0, 0)[:1],
        *rm_stages("09", cfg, m, seq, [(m, 1), (m, 2)], n_pairs, cfg["n_test"] * cfg["rerank_n"]),
    ]


_NOTEBOOKS = {"02": _nb02, "03": _nb03, "04": _nb04, "05": _nb05, "06": _nb06, "07": _nb07, "08": _nb08,
              "09": _nb09}


# --- the notebooks' full configs, and the table -----------------------------------------------

def notebook_config(path, profile: str = "full") -> dict:
    """``CONFIGS[profile]`` of a notebook, read from its file: the cell that defines ``CONFIGS`` is run
    in a fresh namespace (it may use names it defines itself, e.g. notebook 08's ``VARIANTS``).
    Notebook 07's ``EFFICIENCY[profile]`` comes along as ``cfg["_efficiency"]``. (The offline sweeps read
    their notebook's ``tiny`` knobs through it too.)"""
    import contextlib
    import io

    import nbformat

    notebook = nbformat.read(str(path), as_version=4)
    cells = [c.source for c in notebook.cells if c.cell_type == "code" and "CONFIGS = {" in c.source]
    if len(cells) != 1:
        raise ValueError(f"{path}: expected one code cell defining CONFIGS, found {len(cells)}")
    # names the cell may take from earlier cells: a stub pick_config (it picks "full") and `info`
    namespace = {"info": {"device": "cpu", "profile": profile, "seed": 0},
                 "pick_config": lambda configs: configs[profile]}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(cells[0], f"{path}:CONFIGS", "exec"), namespace)
    cfg = dict(namespace["CONFIGS"][profile])
    if "EFFICIENCY" in namespace:
        cfg["_efficiency"] = namespace["EFFICIENCY"][profile]
    return cfg


def notebook_paths(root=None) -> dict:
    """``{"02": path, ...}`` of the notebooks this module sizes."""
    from pathlib import Path

    root = Path(root) if root else Path(__file__).resolve().parent.parent / "notebooks"
    return {p.name[:2]: p for p in sorted(root.glob("0[2-9]_*.ipynb"))}


def estimate(nb: str, cfg: dict) -> list[dict]:
    """One row a stage: ``notebook``, ``stage``, ``gpu_gib``, ``host_gib``, ``minutes`` (T4)."""
    return [{"notebook": nb, "stage": st.name, "gpu_gib": gpu_bytes(st) / GIB, "host_gib": host_bytes(st) / GIB,
             "minutes": seconds(st) / 60} for st in notebook_stages(nb, cfg)]


def table(root=None) -> list[dict]:
    """Every stage of every notebook's full profile."""
    return [row for nb, path in notebook_paths(root).items() for row in estimate(nb, notebook_config(path))]


ESTIMATES = "t4_estimates.json"  # in the shipped data (data/ in a checkout); the README's full-profile column


def summary(rows: list[dict]) -> dict[str, dict]:
    """Per notebook: peak GPU and host GiB over its stages, the stage of the GPU peak, T4 minutes."""
    out = {}
    for nb in sorted({r["notebook"] for r in rows}):
        mine = [r for r in rows if r["notebook"] == nb]
        peak = max(mine, key=lambda r: r["gpu_gib"])
        out[nb] = {"gpu_gib": round(peak["gpu_gib"], 1), "peak_stage": peak["stage"],
                   "host_gib": round(max(r["host_gib"] for r in mine), 1),
                   "t4_minutes": round(sum(r["minutes"] for r in mine))}
    return out


def main(argv=None) -> None:
    import argparse
    import json

    from dpo_lab.paths import data_path

    parser = argparse.ArgumentParser(description="T4 memory and time estimates of every full configuration")
    parser.add_argument("--write", action="store_true", help=f"also write data/{ESTIMATES} (the README reads it)")
    args = parser.parse_args(argv)
    rows = table()
    print(f"{'notebook':8} {'stage':48} {'GPU GiB':>8} {'host GiB':>8} {'T4 min':>7}")
    for row in rows:
        flag = " <- over" if row["gpu_gib"] > GPU_BUDGET_GIB or row["host_gib"] > HOST_BUDGET_GIB else ""
        print(f"{row['notebook']:8} {row['stage']:48} {row['gpu_gib']:8.2f} {row['host_gib']:8.2f} "
              f"{row['minutes']:7.1f}{flag}")
    print(f"\nper notebook (peak GPU, peak host, T4 minutes; budgets {GPU_BUDGET_GIB} and {HOST_BUDGET_GIB} GiB, "
          f"MFU {MFU:.0%}):")
    per_notebook = summary(rows)
    for nb, r in per_notebook.items():
        print(f"{nb:8} {r['gpu_gib']:8.1f} {r['host_gib']:8.1f} {r['t4_minutes']:7d}")
    if args.write:
        path = data_path(ESTIMATES)
        path.write_text(json.dumps(per_notebook, indent=1) + "\n")
        print(f"wrote {path}; then run python -m dpo_lab.syllabus to update the README")


if __name__ == "__main__":
    main()
