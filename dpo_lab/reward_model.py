"""A Bradley-Terry reward model: the first stage of the RLHF pipeline DPO replaces.

Model (Ouyang et al., 2022; Stiennon et al., 2020): a language-model backbone, usually
the SFT model's, with a scalar head on the hidden state of the *last* token of
prompt + completion (an EOS appended, so the head reads a state that has seen all of it):

    r_phi(x, y) = w^T h_last(x, y) + b

Loss: the negative log-likelihood of the observed preferences under Bradley-Terry,
P(y_w > y_l | x) = sigma(r(x, y_w) - r(x, y_l)) (Bradley & Terry, 1952):

    L_BT = -log sigma(r(x, y_w) - r(x, y_l))

It only sees reward *differences*, so the reward's offset is arbitrary. Two optional
ways to pin it down ("centring"):

* ``center_coef`` adds ``center_coef * (r(x, y_w) + r(x, y_l))**2`` to the loss, which
  pulls the mean reward towards 0 (Eisenstein et al., 2023; TRL's
  ``center_rewards_coefficient``, 0.01 in the paper);
* :meth:`RewardScorer.center` subtracts the mean score on reference texts (e.g. samples
  of the SFT model), so "0" means "as good as the reference, on average".

Texts in, numbers out: :class:`RewardScorer` turns a trained model into a callable
``texts -> numpy array``, the same interface as the gold rewards of the tasks, so
best-of-N and RLOO take either. :class:`HubScorer` does the same for a sequence
classifier or reward model from the Hub (the full profile's judges).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from dpo_lab.collate import pad_batch
from dpo_lab.evaluate import pairwise_wins
from dpo_lab.logprobs import position_ids_from_mask
from dpo_lab.progress import progress as progress_bar


class RewardModel(torch.nn.Module):
    """A transformer backbone and a linear head reading the last real token: r(x, y)."""

    def __init__(self, backbone: torch.nn.Module, hidden_size: int, seed: int = 0):
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(hidden_size, 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # a small start (std 1/sqrt(d+1), Stiennon et al., 2020): rewards begin near 0
            torch.nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(hidden_size + 1))
            torch.nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One reward a row: the head applied to the hidden state of the row's last real token."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                               position_ids=position_ids_from_mask(attention_mask)).last_hidden_state
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        last = (attention_mask.long() * positions).argmax(-1)  # last real token, for either padding side
        state = hidden[torch.arange(len(last), device=last.device), last].float()
        with torch.autocast(input_ids.device.type, enabled=False):  # the head in float32, under any precision
            return self.head(state).squeeze(-1)


def reward_model_from_lm(lm, seed: int = 0) -> RewardModel:
    """A reward model whose backbone is a *copy* of a causal LM's body (its LM head dropped).

    Starting from the SFT model is the usual choice: the backbone already reads the
    task's texts, and only the head is new.
    """
    backbone = copy.deepcopy(lm.base_model)  # GPT2LMHeadModel.transformer, and likewise for other models
    return RewardModel(backbone, lm.config.hidden_size, seed=seed).to(next(lm.parameters()).device)


def encode_texts(tokenizer, texts: list[str], max_length: int | None = None) -> tuple[list[list[int]], int]:
    """Token ids of each text with EOS appended; returns ``(ids, n_truncated)``.

    A text longer than ``max_length`` keeps its *end* (where a completion is), EOS
    included, and is counted, not cut silently.
    """
    ids, truncated = [], 0
    for text in texts:
        row = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if max_length is not None and len(row) > max_length:
            row, truncated = row[-max_length:], truncated + 1
        ids.append(row)
    return ids, truncated


def pad_rows(rows: list[list[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token rows into ``input_ids`` and ``attention_mask``: the course's one padding
    code, :func:`dpo_lab.collate.pad_batch`, with every row a prompt and no completion."""
    batch = pad_batch([(row, []) for row in rows], pad_token_id)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                       center_coef: float = 0.0) -> torch.Tensor:
    """One loss a pair: -log sigma(r_w - r_l) + center_coef * (r_w + r_l)^2."""
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(f"chosen rewards {tuple(chosen_rewards.shape)} and rejected rewards "
                         f"{tuple(rejected_rewards.shape)} must have the same shape")
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards)
    if center_coef:
        loss = loss + center_coef * (chosen_rewards + rejected_rewards) ** 2
    return loss


def _pair_texts(pairs: list[dict]) -> tuple[list[str], list[str]]:
    for i, p in enumerate(pairs):
        for field in ("prompt", "chosen", "rejected"):
            if not isinstance(p.get(field), str):
                raise ValueError(f"pair {i}: field {field!r} must be a string, got {type(p.get(field)).__name__}")
    return [p["prompt"] + p["chosen"] for p in pairs], [p["prompt"] + p["rejected"] for p in pairs]


def train_reward_model(rm: RewardModel, tokenizer, pairs: list[dict], *, epochs: float = 1.0, batch_size: int = 32,
                       lr: float = 1e-4, weight_decay: float = 0.0, center_coef: float = 0.0,
                       max_length: int | None = None, grad_clip: float = 1.0, seed: int = 0,
                       progress: bool = True, desc: str = "reward model", precision=None,
                       micro_batch_size: int | None = None) -> pd.DataFrame:
    """Fit ``rm`` to preference pairs by minimising the mean Bradley-Terry loss.

    ``pairs`` are ``prompt``/``chosen``/``rejected`` records; the model scores the whole
    text prompt + completion. Returns one row a step (``step`` from 1, as in every loop): ``loss``,
    ``accuracy`` (share of pairs with r_w > r_l), ``margin`` (mean r_w - r_l), TRL's
    ``RewardTrainer`` names, as is ``mean_reward``, and ``grad_norm``.
    ``precision`` (``"bf16"``, ``"fp16"``, ``"fp32"``; ``None``: decided from the model's device,
    see :mod:`dpo_lab.precision`): the forward pass runs under autocast, fp16 with loss scaling;
    the head reads a float32 hidden state, so the rewards are float32.
    ``micro_batch_size``: pairs a forward/backward pass (gradient accumulation, see
    :func:`dpo_lab.train.micro_batches`); ``None``: the whole batch at once.
    """
    from dpo_lab.precision import clip_and_step, resolve_precision, scaled_backward
    from dpo_lab.train import accumulate, check_finite, check_micro_batch_size, micro_batches, shuffled_batches

    check_micro_batch_size(micro_batch_size)
    device = next(rm.parameters()).device
    precision = resolve_precision(precision, device)
    scaler = precision.grad_scaler()
    chosen_texts, rejected_texts = _pair_texts(pairs)
    chosen, n_c = encode_texts(tokenizer, chosen_texts, max_length)
    rejected, n_r = encode_texts(tokenizer, rejected_texts, max_length)
    if n_c or n_r:
        print(f"reward model: truncated {n_c} chosen and {n_r} rejected texts to their last {max_length} tokens")
    optimizer = torch.optim.AdamW(rm.parameters(), lr=lr, weight_decay=weight_decay)
    rm.train()
    rows = []
    batches = list(shuffled_batches(len(pairs), batch_size, epochs, seed))
    for step, idx in enumerate(progress_bar(batches, desc, enabled=progress), start=1):
        optimizer.zero_grad(set_to_none=True)
        loss = means = None
        for micro, share in micro_batches(idx, micro_batch_size):
            # one forward pass for chosen and rejected rows together, as DPO does
            batch = pad_rows([chosen[i] for i in micro] + [rejected[i] for i in micro], tokenizer.pad_token_id)
            with precision.autocast():
                rewards = rm(**{k: v.to(device) for k, v in batch.items()}).float()
            r_c, r_r = rewards.chunk(2)
            # a mean over the micro-batch's pairs (the centring term too): times its share, its term
            micro_loss = share * bradley_terry_loss(r_c, r_r, center_coef).mean()
            scaled_backward(micro_loss, scaler)
            loss = accumulate(loss, micro_loss.detach())
            means = accumulate(means, share * torch.stack([(r_c > r_r).float().mean(), (r_c - r_r).mean(),
                                                           rewards.mean()]).detach())
        check_finite(loss, step, desc)
        grad_norm = clip_and_step(optimizer, rm.parameters(), grad_clip, scaler)
        accuracy, margin, mean_reward = means.tolist()
        rows.append({"step": step, "loss": loss.item(), "accuracy": accuracy, "margin": margin,
                     "mean_reward": mean_reward, "grad_norm": grad_norm.item()})
    rm.eval()
    return pd.DataFrame(rows)


class RewardScorer:
    """A trained reward model as a plain callable ``texts -> numpy array`` (batched, no grad).

    Texts are sorted by length before batching, so a batch holds texts of similar
    length and little padding. ``offset`` is subtracted from every score (see
    :meth:`center`).
    """

    def __init__(self, rm: RewardModel, tokenizer, batch_size: int = 256, max_length: int | None = None):
        self.rm, self.tokenizer = rm, tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.offset = 0.0
        self.name = "reward_model"

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> np.ndarray:
        ids, _ = encode_texts(self.tokenizer, list(texts), self.max_length)
        device = next(self.rm.parameters()).device
        was_training = self.rm.training
        self.rm.eval()
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.zeros(len(ids))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = pad_rows([ids[i] for i in idx], self.tokenizer.pad_token_id)
            out[idx] = self.rm(**{k: v.to(device) for k, v in batch.items()}).float().cpu().numpy()
        self.rm.train(was_training)
        return out - self.offset

    def center(self, reference_texts: list[str]) -> float:
        """Set ``offset`` so that ``reference_texts`` score 0 on average; returns the offset."""
        self.offset = 0.0
        self.offset = float(np.mean(self(reference_texts)))
        return self.offset


def preference_accuracy(reward_fn, pairs: list[dict]) -> tuple[float, np.ndarray]:
    """Share of pairs where ``reward_fn`` scores prompt + chosen above prompt + rejected.

    A tie counts one half. ``reward_fn`` is any callable ``texts -> array`` (a
    :class:`RewardScorer`, a gold reward). Returns ``(accuracy, margins)``, the margins
    r(x, y_w) - r(x, y_l) one a pair.
    """
    if not pairs:
        raise ValueError("preference_accuracy needs at least one pair")
    chosen_texts, rejected_texts = _pair_texts(pairs)
    scores = np.asarray(reward_fn(chosen_texts + rejected_texts), dtype=float)
    margins = scores[:len(pairs)] - scores[len(pairs):]
    return float(np.mean(pairwise_wins(margins))), margins


class HubScorer:
    """A Hub sequence classifier (or reward model) as a judge: texts in, one number a text out.

    ``name_or_path`` is a Hub id or a local folder in the Hub's layout (``save_pretrained``).
    The score is the softmax probability of class ``label`` (a label name or id) when one is
    given, else the single logit of a one-label model (a reward model). With ``separator``, a
    text is cut at its last occurrence and the two parts go to the tokenizer as two segments
    (a reward model that reads (question, answer) pairs); a text without it is all answer.
    """

    def __init__(self, name_or_path: str, *, label: str | int | None = None, separator: str | None = None,
                 device=None, batch_size: int = 32, max_length: int = 512):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.name = str(name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self.model = AutoModelForSequenceClassification.from_pretrained(name_or_path).eval()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.separator, self.batch_size, self.max_length = separator, batch_size, max_length
        label2id = {str(k): v for k, v in self.model.config.label2id.items()}
        if label is None:
            if self.model.config.num_labels != 1:
                raise ValueError(f"{name_or_path} has {self.model.config.num_labels} labels; a reward model has one "
                                 f"(to score a classifier, name the label: label=...)")
            self.label_id = None
        elif isinstance(label, int):
            self.label_id = label
        elif label in label2id:
            self.label_id = label2id[label]
        else:
            raise ValueError(f"{name_or_path} has labels {sorted(label2id)}, not {label!r}")

    def _encode(self, texts: list[str]):
        if self.separator is None:
            return self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                  max_length=self.max_length)
        parts = [t.rpartition(self.separator) for t in texts]
        questions = [q + sep if sep else a for q, sep, a in parts]
        answers = [a.strip() if sep else "" for q, sep, a in parts]
        return self.tokenizer(questions, answers, return_tensors="pt", padding=True, truncation=True,
                              max_length=self.max_length)

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            logits = self.model(**self._encode(texts[start:start + self.batch_size]).to(self.device)).logits.float()
            scores = logits[:, 0] if self.label_id is None else logits.softmax(-1)[:, self.label_id]
            out.append(scores.cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)
