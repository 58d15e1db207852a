"""sequence_logprobs against a token-by-token computation, and its invariances."""

import pytest
import torch

from dpo_lab.collate import collate_pairs, encode_examples, encode_pairs, pad_batch
from dpo_lab.logprobs import sequence_logprobs

PROMPTS = ["Review: The film", "Review: The cast was large and the", "Hi"]
COMPLETIONS = [" was wonderful.", " story moved me, and I loved it.", " there"]


def by_hand(model, prompt_ids, completion_ids):
    """log p(completion | prompt) one token at a time, no padding, no batching."""
    total = 0.0
    ids = list(prompt_ids)
    for token in completion_ids:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        total += torch.log_softmax(logits.double(), -1)[token].item()
        ids.append(token)
    return total


@pytest.fixture()
def encoded(tokenizer):
    return encode_examples(tokenizer, PROMPTS, COMPLETIONS)[0]


def test_matches_token_by_token(tiny_model, tokenizer, encoded):
    batch = pad_batch(encoded, tokenizer.pad_token_id)
    with torch.no_grad():
        got = sequence_logprobs(tiny_model, **batch)
    expected = [by_hand(tiny_model, p, c) for p, c in encoded]
    assert torch.allclose(got.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-4)
    # and the mean option divides by the number of completion tokens (EOS included)
    with torch.no_grad():
        mean = sequence_logprobs(tiny_model, **batch, average=True)
    lengths = torch.tensor([len(c) for _, c in encoded])
    assert torch.allclose(mean, got / lengths, atol=1e-6)


def test_eos_is_appended(tokenizer, encoded):
    assert all(c[-1] == tokenizer.eos_token_id for _, c in encoded)


@pytest.mark.parametrize("side", ["right", "left"])
def test_invariant_to_padding(tiny_model, tokenizer, encoded, side):
    with torch.no_grad():
        alone = torch.cat([sequence_logprobs(tiny_model, **pad_batch([e], tokenizer.pad_token_id)) for e in encoded])
        padded = sequence_logprobs(tiny_model, **pad_batch(encoded, tokenizer.pad_token_id, side))
        # extra padding: add a much longer row, then drop it
        long = ([5] * 40, [7, tokenizer.eos_token_id])
        extra = sequence_logprobs(tiny_model, **pad_batch(encoded + [long], tokenizer.pad_token_id, side))[:-1]
    assert torch.allclose(alone, padded, atol=1e-4)
    assert torch.allclose(alone, extra, atol=1e-4)


def test_invariant_to_batch_order(tiny_model, tokenizer, encoded):
    order = [2, 0, 1]
    with torch.no_grad():
        base = sequence_logprobs(tiny_model, **pad_batch(encoded, tokenizer.pad_token_id))
        shuffled = sequence_logprobs(tiny_model, **pad_batch([encoded[i] for i in order], tokenizer.pad_token_id))
    assert torch.allclose(base[order], shuffled, atol=1e-4)


def test_pairs_are_stacked_chosen_first(tokenizer):
    records = [{"prompt": "Q", "chosen": " yes", "rejected": " no no"},
               {"prompt": "Q2", "chosen": " a", "rejected": " b"}]
    chosen, rejected, report = encode_pairs(tokenizer, records)
    batch = collate_pairs(chosen, rejected, tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 4
    assert tokenizer.decode(batch["input_ids"][0][batch["completion_mask"][0].bool()]) == " yes<|endoftext|>"
    assert tokenizer.decode(batch["input_ids"][2][batch["completion_mask"][2].bool()]) == " no no<|endoftext|>"
    assert report.total == 4 and report.prompts == 0 and report.completions == 0


def test_truncation_is_counted(tokenizer):
    prompts = ["one two three four five six seven eight", "short"]
    completions = [" a b c d e f g h i j", " ok"]
    encoded, report = encode_examples(tokenizer, prompts, completions, max_prompt_length=3, max_length=6,
                                      verbose=False)
    assert report.prompts == 1 and report.completions == 1 and report.total == 2
    p, c = encoded[0]
    assert len(p) == 3 and len(p) + len(c) == 6
    # the prompt keeps its end, next to the completion
    assert tokenizer.decode(p).endswith("eight")
    with pytest.raises(ValueError, match="max_length"):
        encode_examples(tokenizer, prompts, completions, max_prompt_length=None, max_length=3, verbose=False)
