"""Tokenizing prompt + completion, padding, masks, and stacking chosen with rejected.

Conventions (those of TRL and of the DPO reference implementation):

* the prompt and the completion are tokenized *separately* and concatenated, so the
  boundary between them is exact whatever the tokenizer would merge across it;
* an EOS token is appended to every completion that ended, so the model learns to stop and
  the log-probability of a completion includes the probability of ending it. A completion
  *sampled* until ``max_new_tokens`` ran out did not end: the model never produced that EOS,
  and appending one would teach DPO that the chosen text stops there (or blame the rejected
  one for stopping). Pair records mark such completions ``chosen_truncated`` /
  ``rejected_truncated`` (:func:`dpo_lab.evaluate.sample` reports them), and they are encoded
  without EOS; :func:`encode_pairs` counts them;
* the ``completion_mask`` is 1 on completion tokens (EOS included) and 0 on prompt and
  padding, and the ``attention_mask`` is 0 on padding only;
* for a preference batch the B chosen rows come first and the B rejected rows after,
  so one forward pass scores both (the "concatenated forward" of the reference code).

Truncation is explicit: a prompt longer than ``max_prompt_length`` keeps its *end*
(the words next to the completion), and a completion that does not fit in
``max_length`` keeps its start. Every truncation is counted in a
:class:`TruncationReport`, which says how many were cut; nothing is cut silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TruncationReport:
    """How many prompts and completions were shortened, out of how many, and how many
    completions had been cut off by sampling (``unended``: encoded without EOS)."""

    prompts: int = 0
    completions: int = 0
    total: int = 0
    unended: int = 0

    def __str__(self) -> str:
        text = (f"truncated {self.prompts} of {self.total} prompts and "
                f"{self.completions} of {self.total} completions")
        if self.unended:
            text += f"; {self.unended} of {self.total} completions were cut off by sampling (no EOS added)"
        return text


def encode_example(tokenizer, prompt: str, completion: str, max_prompt_length: int | None = None,
                   max_length: int | None = None, report: TruncationReport | None = None, ended: bool = True):
    """Token ids of ``prompt`` and of ``completion`` + EOS, truncated as the module says.

    ``ended=False`` (a sample cut off by ``max_new_tokens``): no EOS is appended.
    Returns ``(prompt_ids, completion_ids)``, two lists of ints.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if ended:  # the model chose to stop here: the EOS is part of what it said
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    if not prompt_ids:  # an empty prompt still needs one token to condition on
        prompt_ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    if report is not None:
        report.total += 1
        report.unended += not ended
    if max_prompt_length is not None and len(prompt_ids) > max_prompt_length:
        prompt_ids = prompt_ids[-max_prompt_length:]
        if report is not None:
            report.prompts += 1
    if max_length is not None:
        room = max_length - len(prompt_ids)
        if room < 1:
            raise ValueError(f"max_length={max_length} leaves no room for a completion after a "
                             f"{len(prompt_ids)}-token prompt; raise max_length or lower max_prompt_length")
        if len(completion_ids) > room:
            completion_ids = completion_ids[:room]
            if report is not None:
                report.completions += 1
    return prompt_ids, completion_ids


def encode_examples(tokenizer, prompts, completions, max_prompt_length=None, max_length=None,
                    verbose: bool = True, ended=None):
    """Encode many (prompt, completion) pairs; returns ``(encoded, report)``.

    ``ended``: one bool a completion (``False``: cut off by sampling, no EOS); ``None``: all ended.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    ended = [True] * len(prompts) if ended is None else list(ended)
    report = TruncationReport()
    encoded = [encode_example(tokenizer, p, c, max_prompt_length, max_length, report, e)
               for p, c, e in zip(prompts, completions, ended)]
    if verbose and (report.prompts or report.completions or report.unended):
        print(report)
    return encoded, report


def encode_pairs(tokenizer, records, max_prompt_length=None, max_length=None, verbose: bool = True):
    """Encode preference records; returns ``(chosen, rejected, report)``, lists of id pairs.

    A completion flagged ``chosen_truncated`` / ``rejected_truncated`` gets no EOS (see the module
    docstring); the report counts them as ``unended``.
    """
    prompts = [r["prompt"] for r in records]
    ended = {side: [not r.get(f"{side}_truncated", False) for r in records] for side in ("chosen", "rejected")}
    chosen, report_c = encode_examples(tokenizer, prompts, [r["chosen"] for r in records],
                                       max_prompt_length, max_length, verbose=False, ended=ended["chosen"])
    rejected, report_r = encode_examples(tokenizer, prompts, [r["rejected"] for r in records],
                                         max_prompt_length, max_length, verbose=False, ended=ended["rejected"])
    report = TruncationReport(report_c.prompts + report_r.prompts,
                              report_c.completions + report_r.completions,
                              report_c.total + report_r.total, report_c.unended + report_r.unended)
    if verbose and (report.prompts or report.completions or report.unended):
        print(report)
    return chosen, rejected, report


def pad_batch(encoded, pad_token_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad a list of ``(prompt_ids, completion_ids)`` into tensors.

    Returns ``input_ids``, ``attention_mask`` and ``completion_mask``, each ``(batch, length)``.
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    length = max(len(p) + len(c) for p, c in encoded)
    input_ids = torch.full((len(encoded), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), length), dtype=torch.long)
    completion_mask = torch.zeros((len(encoded), length), dtype=torch.long)
    for row, (p, c) in enumerate(encoded):
        n = len(p) + len(c)
        start = 0 if padding_side == "right" else length - n
        input_ids[row, start:start + n] = torch.tensor(p + c)
        attention_mask[row, start:start + n] = 1
        completion_mask[row, start + len(p):start + n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


def collate_pairs(chosen, rejected, pad_token_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """One batch of 2B rows: the B chosen sequences, then the B rejected ones."""
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen but {len(rejected)} rejected sequences")
    return pad_batch(list(chosen) + list(rejected), pad_token_id, padding_side)
