"""Train/inference mismatch: the engine that sampled a completion (vLLM in bf16 with its own
kernels, top-p truncation) is not exactly the distribution the trainer computes, so the
samples are slightly off-policy. A correction turns the per-token log-ratio between the
trainer's sampling-time policy and the sampler into a weight on the policy-gradient term.

Each correction is a registered pure function (`algo.rollout_correction`, options in
`algo.rollout_correction_options`) of `old_logp` (the trainer's log-probs of the sampled
tokens under the policy that sampled them, [B, T]), `sampler_logp` (the engine's, under the
distribution it actually drew from, temperature and truncation applied) and `mask` [B, T].
It returns a detached weight per token, 0 where a token or sequence is masked out.
"""

from __future__ import annotations

import torch
from torch import Tensor

from thinkrl.algos.registry import Registry

CORRECTIONS = Registry("rollout correction", inputs=("old_logp", "sampler_logp", "mask"))


def _log_ratio(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> Tensor:
    """log(pi_trainer / pi_sampler) per token, 0 off the mask (no inf/nan from padding)."""
    if old_logp.shape != sampler_logp.shape or old_logp.shape != mask.shape:
        raise ValueError(f"old_logp {tuple(old_logp.shape)}, sampler_logp {tuple(sampler_logp.shape)} and mask "
                         f"{tuple(mask.shape)} must agree")
    keep = mask > 0
    diff = old_logp.detach().double() - sampler_logp.detach().double()
    return torch.where(keep, diff, torch.zeros_like(diff))


def _sequence_log_ratio(log_ratio: Tensor, mask: Tensor, mean: bool) -> Tensor:
    total = log_ratio.sum(dim=1)
    return total / mask.sum(dim=1).clamp(min=1) if mean else total


def _range_mask(value: Tensor, low: float, high: float, mask: Tensor) -> Tensor:
    inside = (value >= low) & (value <= high)
    return (inside[:, None] & (mask > 0)).to(torch.float32)


@CORRECTIONS.register("none")
def no_correction(mask: Tensor) -> Tensor:
    """Train on every token as if the sampler were the trainer (weight 1)."""
    return (mask > 0).to(torch.float32)


@CORRECTIONS.register("token_tis")
def token_tis(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor, *, cap: float = 2.0) -> Tensor:
    """Truncated importance sampling per token: weight min(pi_trainer / pi_sampler, cap).

    Unbiased where the ratio stays under the cap, variance bounded by it (Yao et al. 2025,
    "Your efficient RL framework secretly brings you off-policy RL training")."""
    if cap <= 0:
        raise ValueError(f"token_tis needs cap > 0, got {cap}")
    ratio = _log_ratio(old_logp, sampler_logp, mask).exp().clamp(max=cap)
    return (ratio * (mask > 0)).to(torch.float32)


@CORRECTIONS.register("sequence_mask")
def sequence_mask(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor, *, low: float = 0.5,
                  high: float = 2.0) -> Tensor:
    """Drop whole completions whose sequence ratio prod_t pi_trainer / pi_sampler lies outside
    [low, high] (masked importance sampling); the others keep weight 1."""
    if not 0 <= low <= 1 <= high:
        raise ValueError(f"sequence_mask needs 0 <= low <= 1 <= high, got low={low}, high={high}")
    ratio = _sequence_log_ratio(_log_ratio(old_logp, sampler_logp, mask), mask, mean=False).exp()
    return _range_mask(ratio, low, high, mask)


@CORRECTIONS.register("geometric_mask")
def geometric_mask(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor, *, low: float = 0.99,
                   high: float = 1.01) -> Tensor:
    """Drop completions whose per-token geometric-mean ratio exp(mean_t log(pi_trainer /
    pi_sampler)) lies outside [low, high]: a length-independent test, so long completions are
    not masked just for being long (as SkyRL recommends)."""
    if not 0 <= low <= 1 <= high:
        raise ValueError(f"geometric_mask needs 0 <= low <= 1 <= high, got low={low}, high={high}")
    ratio = _sequence_log_ratio(_log_ratio(old_logp, sampler_logp, mask), mask, mean=True).exp()
    return _range_mask(ratio, low, high, mask)


def mismatch_stats(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor, weights: Tensor) -> dict[str, float]:
    """How far the sampler was from the trainer, and what the correction did: the k3 estimate
    of KL(sampler || trainer) per token (the tokens were drawn from the sampler), the mean and
    max token ratio pi_trainer / pi_sampler, and the shares of tokens and completions with
    weight 0."""
    keep = mask > 0
    log_ratio = _log_ratio(old_logp, sampler_logp, mask)
    tokens = keep.sum().clamp(min=1)
    ratio = log_ratio.exp()
    k3 = (ratio - log_ratio - 1.0) * keep
    dropped = (weights == 0) & keep
    rows = keep.any(dim=1)
    return {
        "mismatch/kl": float(k3.sum() / tokens),
        "mismatch/ratio_mean": float((ratio * keep).sum() / tokens),
        "mismatch/ratio_max": float(ratio[keep].max()) if bool(keep.any()) else 1.0,
        "mismatch/masked_token_share": float(dropped.sum() / tokens),
        "mismatch/masked_sequence_share": float((dropped.sum(dim=1) == keep.sum(dim=1))[rows].float().mean())
        if bool(rows.any()) else 0.0,
    }
