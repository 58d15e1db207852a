"""The log-probability of a completion given its prompt.

For a prompt x and a completion y = (y_1, ..., y_T) a causal LM factorises

    log pi(y|x) = sum_t log pi(y_t | x, y_<t)                        (sum)
    (1/T) sum_t log pi(y_t | x, y_<t)                                (mean, "average=True")

The logits at position i predict the token at position i+1, so the labels are the
inputs shifted left by one, and only completion positions count. This is the
quantity every preference loss in the course is built on.

Two ways to compute it, with the same values and gradients:

* the plain way (:func:`token_logprobs`, ``chunk_size=None``): the model's logits,
  cast to float32, then a log-softmax over the vocabulary. Simple, but at GPT-2's
  50,257-token vocabulary the float32 logits of a batch (rows x positions x vocabulary,
  plus their gradient and the log-softmax's) dominate the memory of a training step;
* the chunked way (:class:`ChunkedTokenLogprobs`, the default): the model's body gives
  the last hidden states, and the output projection and log-softmax are computed a few
  hundred positions at a time, only at completion positions, keeping one number a
  position (the log-normaliser); the backward pass recomputes each chunk's logits.

A sampling temperature T enters as logits / T: the log-probs are those of the
distribution the samples were drawn from (``temperature=1`` is the model itself).
"""

from __future__ import annotations

import torch

# positions a chunk: 512 x 50,257 float32 logits are 98 MiB
DEFAULT_CHUNK_SIZE = 512


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``log softmax(logits / T)[label]`` at every position: the plain reference version.

    ``logits`` (..., vocab) and ``labels`` (...) -> (...). Computed in float32 so that
    bf16/fp16 logits do not lose the small differences DPO cares about.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


class ChunkedTokenLogprobs(torch.autograd.Function):
    """log softmax(s * (h W^T + b))[label] for N positions, ``chunk_size`` positions at a time.

    Inputs: ``hidden`` h (N, d), the output projection ``weight`` W (V, d) and ``bias`` b
    (V,) or None, ``labels`` (N,), ``scale`` s (1/temperature) and ``chunk_size``.
    Output: (N,) float32 log-probs.

    What it saves, and why that is enough. With z = s (h W^T + b) the logits of one
    position and lse = log sum_v exp(z_v) its log-normaliser, the output is
    o = z_y - lse, and

        d o / d z_v = 1[v = y] - softmax(z)_v = 1[v = y] - exp(z_v - lse)

    so given the upstream gradient g (one number a position), the gradient at the logits
    is G = g (onehot(y) - exp(z - lse)), and by the chain rule through z = s (h W^T + b):

        dL/dh = s G W        dL/dW = s G^T h        dL/db = s sum_positions G

    Everything on the right can be rebuilt from h, W, b, y and lse: the backward pass
    recomputes z chunk by chunk. So the forward keeps only the inputs (already alive in
    the graph) and lse, N float32 numbers, instead of the N x V float32 logits and their
    softmax. Peak extra memory is a few chunk_size x V float32 tensors, whatever N is.

    Every chunk is computed in float32 (h and W are upcast, autocast is off inside), so
    a bf16/fp16 model gets float32 log-probs; the gradients are returned in the inputs'
    dtypes. A weight tied to the input embedding (GPT-2) simply receives this gradient
    as one more contribution: autograd adds it to the embedding's own.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, scale: float = 1.0, chunk_size: int = DEFAULT_CHUNK_SIZE):
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.float()
            b = bias.float() if bias is not None else None
            out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
            lse = torch.empty_like(out)
            for start in range(0, hidden.shape[0], chunk_size):
                end = start + chunk_size
                z = _chunk_logits(hidden[start:end], w, b, scale)
                lse[start:end] = torch.logsumexp(z, dim=-1)
                out[start:end] = z.gather(-1, labels[start:end, None]).squeeze(-1) - lse[start:end]
        ctx.save_for_backward(hidden, weight, bias, labels, lse)
        ctx.scale, ctx.chunk_size = scale, chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, labels, lse = ctx.saved_tensors
        scale, chunk_size = ctx.scale, ctx.chunk_size
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = grad_w = grad_b = None
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.float()
            b = bias.float() if bias is not None else None
            if need_h:
                grad_h = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device)
            if need_w:
                grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            if need_b:
                grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
            grad_out = grad_out.float()
            for start in range(0, hidden.shape[0], chunk_size):
                end = start + chunk_size
                h = hidden[start:end].float()
                z = _chunk_logits(h, w, b, scale)
                # G = g * (onehot(y) - softmax(z)), built in place in z's memory
                g = z.sub_(lse[start:end, None]).exp_().neg_()
                g.scatter_add_(-1, labels[start:end, None], torch.ones_like(g[:, :1]))
                g.mul_(grad_out[start:end, None] * scale)
                if need_h:
                    grad_h[start:end] = g @ w
                if need_w:
                    grad_w.addmm_(g.t(), h)
                if need_b:
                    grad_b += g.sum(0)
        if grad_h is not None:
            grad_h = grad_h.to(hidden.dtype)
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None, None


def _chunk_logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, scale: float) -> torch.Tensor:
    """float32 logits s * (h W^T + b) of one chunk of positions."""
    z = h.float() @ w.t()
    if b is not None:
        z += b
    if scale != 1.0:
        z *= scale
    return z


def chunked_token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, bias=None,
                           temperature: float = 1.0, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """``log softmax((hidden W^T + b) / T)[labels]`` without all the logits at once; see
    :class:`ChunkedTokenLogprobs`. ``hidden`` (N, d), ``labels`` (N,) -> (N,) float32."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return ChunkedTokenLogprobs.apply(hidden, weight, bias, labels, 1.0 / temperature, chunk_size)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0, 1, 2, ... counted over real tokens only, so left padding changes nothing."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def body_and_head(model):
    """``(body, lm_head)`` of a causal LM whose logits are exactly ``lm_head(body(...).last_hidden_state)``,
    or ``None`` when that cannot be relied on (then the plain path is used).

    Works for ``transformers`` causal LMs (GPT-2: ``model.transformer`` and ``model.lm_head``,
    whose weight is tied to the input embedding) and for peft-wrapped ones whose LoRA
    adapters sit inside the body. An LM head that is itself wrapped (a LoRA on ``lm_head``),
    or a model that rescales or caps its logits, is left to the plain path.
    """
    get_body, get_head = getattr(model, "get_decoder", None), getattr(model, "get_output_embeddings", None)
    if get_body is None or get_head is None:
        return None
    try:
        body, head = get_body(), get_head()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    if body is None or body is model or type(head) is not torch.nn.Linear:
        return None
    config = getattr(model, "config", None)
    if any(getattr(config, name, None) not in (None, 1.0) for name in
           ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier",
            "output_multiplier_scale", "lm_head_multiplier")):
        return None
    return body, head


def _completion_positions(completion_mask: torch.Tensor) -> torch.Tensor:
    label_mask = completion_mask[:, 1:].bool()
    if not label_mask.any(dim=1).all():
        raise ValueError("a row has no completion tokens to score")
    return label_mask


def hidden_states(model, input_ids, attention_mask, body=None) -> torch.Tensor:
    """The last hidden states (rows, positions, d) that the LM head reads."""
    body = body if body is not None else body_and_head(model)[0]
    out = body(input_ids=input_ids, attention_mask=attention_mask,
               position_ids=position_ids_from_mask(attention_mask), use_cache=False)
    return out.last_hidden_state


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      completion_mask: torch.Tensor, average: bool = False, temperature: float = 1.0,
                      chunk_size: int | None = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Summed (or, with ``average=True``, per-token mean) log pi(completion | prompt), one a row.

    The inputs come from :func:`dpo_lab.collate.pad_batch`. The result does not depend
    on the amount or side of padding, nor on which other rows share the batch: padding
    is masked out of attention, positions are counted over real tokens only, and only
    completion tokens are summed. ``temperature`` scores under softmax(logits / T), the
    distribution a sample at temperature T was drawn from.

    ``chunk_size`` positions at a time (the default): the vocabulary projection runs only
    at completion positions, chunk by chunk, and the full-vocabulary float32 logits never
    exist (:class:`ChunkedTokenLogprobs`). ``chunk_size=None`` is the plain reference
    path: the model's own logits (only from the first completion position on,
    ``logits_to_keep``), then :func:`token_logprobs`. Both give the same numbers.
    """
    label_mask = _completion_positions(completion_mask)
    parts = body_and_head(model) if chunk_size is not None else None
    if parts is not None:
        body, head = parts
        hidden = hidden_states(model, input_ids, attention_mask, body)[:, :-1]
        rows, positions = label_mask.nonzero(as_tuple=True)
        per_token = chunked_token_logprobs(hidden[rows, positions], head.weight, input_ids[rows, positions + 1],
                                           bias=head.bias, temperature=temperature, chunk_size=chunk_size)
        total = torch.zeros(input_ids.shape[0], dtype=per_token.dtype, device=per_token.device)
        total = total.index_add(0, rows, per_token)
    else:
        length = input_ids.shape[1]
        first = int(label_mask.float().argmax(dim=1).min())  # earliest logits position needed
        keep = (length - 1) - first
        out = model(input_ids=input_ids, attention_mask=attention_mask,
                    position_ids=position_ids_from_mask(attention_mask), use_cache=False,
                    logits_to_keep=keep + 1)
        logits = out.logits[:, :-1] if keep > 0 else out.logits[:, :0]
        labels = input_ids[:, first + 1:]
        mask = label_mask[:, first:]
        total = (token_logprobs(logits, labels, temperature) * mask).sum(-1)
    if average:
        return total / label_mask.sum(-1)
    return total


@torch.no_grad()
def token_kl(policy, ref_model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             completion_mask: torch.Tensor, chunk_size: int | None = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """sum over completion positions t of the exact KL(pi(.|x, y_<t) || pi_ref(.|x, y_<t)), one a row.

    Each position's KL is summed over the *whole* vocabulary, sum_v p_v (log p_v - log q_v);
    the chunked path only computes it a chunk of positions at a time, from the two models'
    hidden states, so the (positions x vocabulary) float32 tensors of all positions never
    exist together. ``chunk_size=None``: the plain computation from the full logits.
    """
    label_mask = _completion_positions(completion_mask)
    parts_p = body_and_head(policy) if chunk_size is not None else None
    parts_q = body_and_head(ref_model) if chunk_size is not None else None
    if parts_p is None or parts_q is None:
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids_from_mask(attention_mask), use_cache=False)
        logp = torch.log_softmax(policy(**kwargs).logits[:, :-1].float(), -1)
        logq = torch.log_softmax(ref_model(**kwargs).logits[:, :-1].float(), -1)
        per_position = (logp.exp() * (logp - logq)).sum(-1)
        return (per_position * label_mask).sum(-1)
    rows, positions = label_mask.nonzero(as_tuple=True)
    h_p = hidden_states(policy, input_ids, attention_mask, parts_p[0])[:, :-1][rows, positions]
    h_q = hidden_states(ref_model, input_ids, attention_mask, parts_q[0])[:, :-1][rows, positions]
    head_p, head_q = parts_p[1], parts_q[1]
    w_p, w_q = head_p.weight.float(), head_q.weight.float()
    b_p = head_p.bias.float() if head_p.bias is not None else None
    b_q = head_q.bias.float() if head_q.bias is not None else None
    per_token = torch.empty(len(rows), dtype=torch.float32, device=input_ids.device)
    with torch.autocast(input_ids.device.type, enabled=False):
        for start in range(0, len(rows), chunk_size):
            end = start + chunk_size
            logp = torch.log_softmax(_chunk_logits(h_p[start:end], w_p, b_p, 1.0), -1)
            logq = torch.log_softmax(_chunk_logits(h_q[start:end], w_q, b_q, 1.0), -1)
            per_token[start:end] = (logp.exp() * (logp - logq)).sum(-1)
    total = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device)
    return total.index_add(0, rows, per_token)
