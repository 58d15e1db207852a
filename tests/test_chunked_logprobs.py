"""The chunked log-probs (the default) against the plain full-logits version: same values, same gradients."""

import copy

import pytest
import torch

from dpo_lab.collate import encode_examples, pad_batch
from dpo_lab.logprobs import body_and_head, chunked_token_logprobs, sequence_logprobs, token_kl, token_logprobs

RTOL, ATOL = 1e-5, 1e-6
PROMPTS = ["Review: The film", "Review: The cast was large and the", "Hi", "The"]
COMPLETIONS = [" was wonderful.", " story moved me, and I loved it.", " there", " film was bad and long and dull."]


def close(a, b):
    torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 40, 1000])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_function_matches_plain_values_and_gradients(chunk_size, temperature):
    g = torch.Generator().manual_seed(0)
    n, d, vocab = 40, 16, 97
    hidden = torch.randn(n, d, generator=g, requires_grad=True)
    weight = torch.randn(vocab, d, generator=g).mul_(0.3).requires_grad_(True)
    bias = torch.randn(vocab, generator=g).requires_grad_(True)
    labels = torch.randint(vocab, (n,), generator=g)
    upstream = torch.randn(n, generator=g)  # a gradient that is not all ones

    plain = token_logprobs(hidden @ weight.t() + bias, labels, temperature)
    grads_plain = torch.autograd.grad((plain * upstream).sum(), (hidden, weight, bias))
    chunked = chunked_token_logprobs(hidden, weight, labels, bias=bias, temperature=temperature,
                                     chunk_size=chunk_size)
    grads_chunked = torch.autograd.grad((chunked * upstream).sum(), (hidden, weight, bias))
    close(chunked, plain)
    for a, b in zip(grads_chunked, grads_plain):
        close(a, b)
    # and by hand for one position: z_y - logsumexp(z)
    z = (hidden[5] @ weight.t() + bias).detach().double() / temperature
    assert chunked[5].item() == pytest.approx((z[labels[5]] - torch.logsumexp(z, 0)).item(), abs=1e-5)


@pytest.fixture()
def encoded(tokenizer):
    return encode_examples(tokenizer, PROMPTS, COMPLETIONS)[0]


def _values_and_grads(model, batch, **kwargs):
    model.zero_grad(set_to_none=True)
    out = sequence_logprobs(model, **batch, **kwargs)
    (out * torch.tensor([1.0, -0.5, 2.0, 0.3])).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("chunk_size", [5, 7, 1000])
def test_sequence_logprobs_chunked_equals_plain(tiny_model, tokenizer, encoded, side, chunk_size):
    """Padding on either side, several chunk sizes and one larger than every sequence: values and
    gradients of every parameter (the tied embedding / LM-head weight included) agree."""
    assert body_and_head(tiny_model) is not None
    assert tiny_model.lm_head.weight is tiny_model.transformer.wte.weight  # tied, as GPT-2's
    batch = pad_batch(encoded + [([5] * 12, [7, tokenizer.eos_token_id])], tokenizer.pad_token_id, side)
    batch = {k: v[:4] for k, v in batch.items()}  # extra padding from a dropped long row
    for average in (False, True):
        plain, grads_plain = _values_and_grads(tiny_model, batch, average=average, chunk_size=None)
        chunked, grads_chunked = _values_and_grads(tiny_model, batch, average=average, chunk_size=chunk_size)
        close(chunked, plain)
        assert grads_chunked.keys() == grads_plain.keys() and "transformer.wte.weight" in grads_plain
        for name in grads_plain:
            close(grads_chunked[name], grads_plain[name])


def test_one_position_chunks_are_as_exact_as_the_plain_path(tiny_model, tokenizer, encoded):
    """Chunks of one position: the values agree to rtol 1e-5 / atol 1e-6; the gradients differ from the plain
    float32 path by float32 rounding only (a matrix-vector product per row sums in another order), so both are
    compared with the exact float64 gradient: the plain float32 path is itself about 1.3e-6 from it here."""
    batch = pad_batch(encoded, tokenizer.pad_token_id, "left")
    exact, grads_exact = _values_and_grads(copy.deepcopy(tiny_model).double(), batch, chunk_size=None)
    plain, grads_plain = _values_and_grads(tiny_model, batch, chunk_size=None)
    chunked, grads_chunked = _values_and_grads(tiny_model, batch, chunk_size=1)
    close(chunked, plain)
    for name, g in grads_exact.items():
        err_plain = (grads_plain[name].double() - g).abs().max().item()
        err_chunked = (grads_chunked[name].double() - g).abs().max().item()
        assert err_chunked <= 3 * err_plain + 1e-6, (name, err_chunked, err_plain)


def test_temperature_scores_the_scaled_distribution(tiny_model, tokenizer, encoded):
    batch = pad_batch(encoded, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = tiny_model(**batch).logits[:, :-1] / 0.5
        by_hand = (torch.log_softmax(logits, -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
                   * batch["completion_mask"][:, 1:]).sum(-1)
        close(sequence_logprobs(tiny_model, **batch, temperature=0.5), by_hand)
        close(sequence_logprobs(tiny_model, **batch, temperature=0.5, chunk_size=None), by_hand)
        assert (sequence_logprobs(tiny_model, **batch) - by_hand).abs().min() > 1e-2  # T matters


def test_token_kl_chunked_equals_plain(tiny_model, tokenizer, encoded):
    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    batch = pad_batch(encoded, tokenizer.pad_token_id, "left")
    plain = token_kl(tiny_model, other, **batch, chunk_size=None)
    for chunk_size in (1, 4, 1000):
        close(token_kl(tiny_model, other, **batch, chunk_size=chunk_size), plain)
    assert (plain > 0).all()
    assert torch.allclose(token_kl(tiny_model, tiny_model, **batch), torch.zeros(4), atol=1e-6)


def test_bf16_model_gets_float32_logprobs(tiny_model, tokenizer, encoded):
    batch = pad_batch(encoded, tokenizer.pad_token_id)
    half = copy.deepcopy(tiny_model).to(torch.bfloat16)
    with torch.no_grad():
        chunked = sequence_logprobs(half, **batch)
        plain = sequence_logprobs(half, **batch, chunk_size=None)
    assert chunked.dtype == torch.float32
    # same bf16 hidden states, both upcast before the projection or after it: close, not equal
    torch.testing.assert_close(chunked, plain, rtol=2e-2, atol=0.1)


def test_lora_model_uses_the_chunked_path(tiny_model, tokenizer, encoded):
    from dpo_lab.models import lora_policy

    policy = lora_policy(copy.deepcopy(tiny_model), rank=4)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    assert body_and_head(policy) is not None
    batch = pad_batch(encoded, tokenizer.pad_token_id)
    plain, grads_plain = _values_and_grads(policy, batch, chunk_size=None)
    chunked, grads_chunked = _values_and_grads(policy, batch)
    close(chunked, plain)
    assert grads_plain and all("lora_" in n for n in grads_plain)
    for name in grads_plain:
        close(grads_chunked[name], grads_plain[name])
    with torch.no_grad(), policy.disable_adapter():
        close(sequence_logprobs(policy, **batch), sequence_logprobs(tiny_model, **batch, chunk_size=None))
