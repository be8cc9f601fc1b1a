"""Aggregations: how a batch's per-token losses become one number (`algo.aggregation`).

Each takes `per_token` [B, T] (already zero off the completion tokens) and `weights` [B, T]
(1 on completion tokens), and for the constant-normalised ones `max_len` (the completion
cap). `unit` says how the trainer splits the normaliser over micro-batches and processes:
"rows" (a mean over completions: each micro-batch weighs by its share of rows) or "tokens"
(a mean over all tokens of the update: each by its share of tokens).
"""

from __future__ import annotations

from torch import Tensor

from thinkrl.algos.registry import Registry

AGGREGATIONS = Registry("aggregation", inputs=("per_token", "weights", "max_len"))


@AGGREGATIONS.register("sequence", unit="rows")
def sequence_mean(per_token: Tensor, weights: Tensor) -> Tensor:
    """GRPO: mean over each completion's tokens, then over completions."""
    return (per_token.sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)).mean()


@AGGREGATIONS.register("token", unit="tokens")
def token_mean(per_token: Tensor, weights: Tensor) -> Tensor:
    """DAPO: sum over all tokens / number of tokens (long answers weigh more)."""
    return per_token.sum() / weights.sum().clamp(min=1.0)


@AGGREGATIONS.register("dr_grpo", unit="rows")
def constant_length(per_token: Tensor, weights: Tensor, max_len: int) -> Tensor:
    """Dr. GRPO: sum over all tokens / (B * max_len), a constant: no length bias."""
    if not max_len:
        raise ValueError("aggregation 'dr_grpo' needs max_len (the constant length, e.g. max_new_tokens)")
    return per_token.sum() / (per_token.shape[0] * max_len)
