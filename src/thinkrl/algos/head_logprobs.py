"""Log-probs and entropies of sampled tokens straight from hidden states, without ever
holding the full-vocabulary logits.

With a 151k-token vocabulary the LM head's logits are the largest tensor of a GRPO update
(a [16, 247, 151646] fp32 micro-batch is 2.4 GB, and its gradient as much again), yet the
loss needs one number per token: log p(target), plus the entropy the metrics watch. So the
hidden states of the completion tokens go through the head a chunk of tokens at a time;
each chunk's logits give its log-probs and entropies and are freed, and the backward
recomputes a chunk's logits and writes their gradient analytically:

    z = h W^T / T,  lse = logsumexp(z),  p = exp(z - lse)
    log p(y) = z_y - lse                       d/dz = onehot(y) - p
    H = lse - sum_j p_j z_j                    d/dz = -p * (z - lse + H)

Peak memory is a few [chunk, V] float32 buffers whatever the batch. The softmax math is in
float32; the matmuls run in the dtype autocast would use (bf16 under bf16 autocast).
"""

from __future__ import annotations

import torch
from torch import Tensor

# One chunk's float32 logits when the chunk is not given. On CPU a chunk that stays in cache
# makes the softmax passes after the matmul cheap (32 MiB: the forward 1.4x faster than 128 MiB at a 151k
# vocabulary); a GPU wants fewer, larger matmuls.
CHUNK_BYTES = {"cpu": 32 * 2**20, "cuda": 256 * 2**20}


def auto_chunk_tokens(vocab_size: int, device_type: str = "cpu") -> int:
    """Tokens per chunk that keep one chunk's float32 logits near CHUNK_BYTES (55 tokens for
    Qwen's 151k vocabulary on CPU, 442 on a GPU; a small vocabulary goes in one chunk)."""
    return max(1, CHUNK_BYTES.get(device_type, CHUNK_BYTES["cuda"]) // (4 * vocab_size))


def head_logprobs(hidden: Tensor, weight: Tensor, targets: Tensor, temperature: float = 1.0,
                  bias: Tensor | None = None, chunk_tokens: int | None = None) -> tuple[Tensor, Tensor]:
    """([N] log p(targets), [N] entropy) of softmax((hidden @ weight.T + bias) / temperature)
    for N hidden states [N, H], a head weight [V, H] and targets [N], `chunk_tokens` at a time
    (None: `auto_chunk_tokens`). Both outputs carry gradients to hidden, weight and bias (the
    entropy's is used by an entropy bonus only)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_tokens is None:
        chunk_tokens = auto_chunk_tokens(weight.shape[0], hidden.device.type)
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(f"need hidden [N, H] and targets [N], got {tuple(hidden.shape)} and {tuple(targets.shape)}")
    dtype = _matmul_dtype(hidden)
    return _HeadLogprobs.apply(hidden, weight, bias, targets, float(temperature), int(chunk_tokens), dtype)


class _HeadLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, chunk, dtype):
        n, exact = hidden.shape[0], _softmax_dtype(dtype)
        logp = hidden.new_empty(n, dtype=exact)
        entropy = hidden.new_empty(n, dtype=exact)
        lse = hidden.new_empty(n, dtype=exact)
        for start in range(0, n, chunk):
            span = slice(start, start + chunk)
            z = _scaled_logits(hidden[span], weight, bias, temperature, dtype)
            top = z.max(dim=-1, keepdim=True).values
            e = torch.exp(z - top)  # one exp serves the normaliser and the entropy
            total = e.sum(dim=-1)
            lse[span] = top.squeeze(1) + total.log()
            logp[span] = z.gather(1, targets[span, None]).squeeze(1) - lse[span]
            entropy[span] = lse[span] - (e * z).sum(dim=-1) / total
        ctx.save_for_backward(hidden, weight, bias, targets, lse, entropy)
        ctx.temperature, ctx.chunk, ctx.dtype = temperature, chunk, dtype
        ctx.set_materialize_grads(False)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, bias, targets, lse, entropy = ctx.saved_tensors
        temperature, chunk, dtype = ctx.temperature, ctx.chunk, ctx.dtype
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        exact = lse.dtype
        grad_weight = torch.zeros(weight.shape, dtype=exact, device=weight.device) if need_weight else None
        grad_bias = torch.zeros(weight.shape[0], dtype=exact, device=weight.device) if need_bias else None
        if grad_logp is None and grad_entropy is None:
            return grad_hidden, grad_weight, grad_bias, None, None, None, None
        for start in range(0, hidden.shape[0], chunk):
            span = slice(start, start + chunk)
            z = _scaled_logits(hidden[span], weight, bias, temperature, dtype)
            log_p = z.sub_(lse[span, None])  # in place: the chunk's buffers are the cost here
            if grad_entropy is None:  # the usual case (entropy only watched): grad_z = g (onehot - p)
                g = grad_logp[span, None].to(exact)
                grad_z = log_p.exp_().mul_(-g)
                grad_z.scatter_add_(1, targets[span, None], g)
            else:
                p = log_p.exp()
                grad_z = p * (log_p + entropy[span, None]) * -grad_entropy[span, None].to(exact)  # dH/dz
                if grad_logp is not None:  # d log p(y)/dz = onehot(y) - p
                    g = grad_logp[span, None].to(exact)
                    grad_z -= p * g
                    grad_z.scatter_add_(1, targets[span, None], g)
            if temperature != 1.0:
                grad_z /= temperature
            grad_z = grad_z.to(dtype)
            if need_hidden:
                grad_hidden[span] = (grad_z @ weight.to(dtype)).to(hidden.dtype)
            if need_weight and dtype == exact:
                grad_weight.addmm_(grad_z.t(), hidden[span].to(dtype))  # no [V, H] temporary per chunk
            elif need_weight:
                grad_weight += (grad_z.t() @ hidden[span].to(dtype)).to(exact)
            if need_bias:
                grad_bias += grad_z.to(exact).sum(0)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(bias.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None, None


def _scaled_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, temperature: float, dtype: torch.dtype) -> Tensor:
    """[c, V] float32 logits / temperature of one chunk (matmul in `dtype`, autocast off so it stays so)."""
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        z = hidden.to(dtype) @ weight.to(dtype).t()
        if bias is not None:
            z = z + bias.to(dtype)
    z = z.to(_softmax_dtype(z.dtype))
    return z / temperature if temperature != 1.0 else z


def _softmax_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _matmul_dtype(hidden: Tensor) -> torch.dtype:
    """The dtype the head's matmul would run in: autocast's when it is on, else the input's."""
    kind = hidden.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return hidden.dtype
