"""The GRPO math: group-relative advantages, the clipped objective with its variants, the
k3 KL estimator, and token log-probs from logits.

Pure functions of tensors, in the manner of verl's `core_algos`: no model, no config, no
I/O, so every number can be checked by hand (tests/algos/test_algos_grpo.py does).
Shapes: B samples laid out group by group (G consecutive completions per prompt), T token
positions, V vocabulary entries.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

AdvantageScale = Literal["std", "none"]
AdvantageLevel = Literal["group", "batch"]
Aggregation = Literal["sequence", "token", "dr_grpo"]


def group_advantages(
    rewards: Tensor,
    group_size: int,
    scale: AdvantageScale = "std",
    level: AdvantageLevel = "group",
    eps: float = 1e-4,
) -> Tensor:
    """Advantage of each completion relative to the other completions of its prompt: GRPO
    needs no value model because the group's mean reward is the baseline.

    `scale="std"` divides by `std + eps` (GRPO); `scale="none"` only subtracts the mean
    (Dr. GRPO: std scaling over-weights groups that nearly all agree). `level="batch"` keeps
    the per-group mean but divides by the std of all rewards in the batch (TRL's
    `scale_rewards="batch"`, "Tricks or Traps" 2025), which is steadier than a small group's.

    The std is Bessel-corrected (divides by n-1), as `torch.std` in TRL and verl computes it,
    so our advantages match theirs number for number ([1, 0] -> +-0.707, not +-1). The
    choice only rescales every advantage by the constant sqrt(n/(n-1)); the clip acts on
    the ratio, not on A, so it amounts to a learning-rate factor.

    A group whose rewards all agree carries no signal and gets exactly 0.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    if scale not in ("std", "none"):
        raise ValueError(f"scale must be 'std' or 'none', got {scale!r}")
    if level not in ("group", "batch"):
        raise ValueError(f"level must be 'group' or 'batch', got {level!r}")
    dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
    groups = rewards.to(dtype).view(-1, group_size)
    advantages = groups - groups.mean(dim=1, keepdim=True)
    if scale == "std":
        if level == "group":
            if group_size < 2:
                raise ValueError("std scaling per group needs group_size >= 2")
            std = groups.std(dim=1, keepdim=True)
        else:
            std = groups.flatten().std() if groups.numel() > 1 else groups.new_zeros(())
        advantages = advantages / (std + eps)
    # Exactly 0, not mean-rounding noise divided by eps.
    flat = groups.amax(dim=1) == groups.amin(dim=1)
    advantages = advantages.masked_fill(flat.unsqueeze(1), 0.0)
    return advantages.reshape(-1)


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the sampled token alone (Schulman's k3):
    exp(ref - logp) - (ref - logp) - 1. Unbiased, and never negative since e^x >= 1 + x."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1.0


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    aggregation: Aggregation = "sequence",
    max_len_norm: int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The clipped surrogate loss to minimise, and what it did.

    logp, old_logp, ref_logp: [B, T] log-probs of the sampled tokens under the policy being
    trained, the policy that sampled them, and the frozen reference. advantages: [B], one per
    completion. mask: [B, T], 1 on completion tokens, 0 on prompt and padding.

    Per token: -min(rho A, clip(rho, 1-eps_low, 1+eps_high) A) + beta * k3, rho = exp(logp -
    old_logp). eps_high > eps_low is DAPO's clip-higher. Aggregation over tokens:
      "sequence": mean over each completion's tokens, then over completions (GRPO);
      "token":    sum over all tokens / number of tokens (DAPO: long answers weigh more);
      "dr_grpo":  sum over all tokens / (B * max_len_norm), a constant (Dr. GRPO: no length bias).

    Stats (over completion tokens only): clip_fraction_low (A < 0, rho < 1-eps_low),
    clip_fraction_high (A > 0, rho > 1+eps_high), clip_fraction (either), ratio_mean, and kl
    when ref_logp is given.
    """
    if logp.shape != old_logp.shape or logp.shape != mask.shape:
        raise ValueError(f"logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)} and mask "
                         f"{tuple(mask.shape)} must have the same [B, T] shape")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be [B]={logp.shape[0]}, got shape {tuple(advantages.shape)}")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (the reference model's log-probs)")
    if aggregation == "dr_grpo" and not max_len_norm:
        raise ValueError("aggregation 'dr_grpo' needs max_len_norm (the constant length, e.g. max_new_tokens)")
    if aggregation not in ("sequence", "token", "dr_grpo"):
        raise ValueError(f"aggregation must be 'sequence', 'token' or 'dr_grpo', got {aggregation!r}")

    keep = mask > 0
    weights = keep.to(logp.dtype)
    # `where`, not multiply: prompt/padding positions may hold anything (inf, nan), and
    # exp(garbage) * 0 would still be nan. Zeroed log-ratios keep them out of values and grads.
    log_ratio = torch.where(keep, logp - old_logp.to(logp.dtype), torch.zeros_like(logp))
    ratio = torch.exp(log_ratio)
    adv = advantages.to(logp.dtype).unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    per_token = -torch.minimum(unclipped, clipped)

    kl = None
    if ref_logp is not None:
        if ref_logp.shape != logp.shape:
            raise ValueError(f"ref_logp {tuple(ref_logp.shape)} must match logp {tuple(logp.shape)}")
        zero = torch.zeros_like(logp)
        kl = kl_k3(torch.where(keep, logp, zero), torch.where(keep, ref_logp, zero))  # 0 off the mask
        if beta > 0:
            per_token = per_token + beta * kl

    per_token = per_token * weights
    if aggregation == "sequence":
        loss = (per_token.sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)).mean()
    elif aggregation == "token":
        loss = per_token.sum() / weights.sum().clamp(min=1.0)
    else:
        loss = per_token.sum() / (logp.shape[0] * max_len_norm)

    with torch.no_grad():
        tokens = weights.sum().clamp(min=1.0)
        low = (ratio < 1.0 - eps_low) & (adv < 0) & keep
        high = (ratio > 1.0 + eps_high) & (adv > 0) & keep
        stats = {
            "clip_fraction_low": float(low.sum() / tokens),
            "clip_fraction_high": float(high.sum() / tokens),
            "clip_fraction": float((low | high).sum() / tokens),
            "ratio_mean": float((ratio * weights).sum() / tokens),
        }
        if kl is not None:
            stats["kl"] = float((kl * weights).sum() / tokens)
    return loss, stats


def token_logprobs(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> Tensor:
    """[B, T] log-prob of each label under softmax(logits / temperature).

    Dividing by the rollout's sampling temperature makes the ratio compare the policy with
    the distribution the tokens were actually drawn from. Rows are done one at a time, as
    gather minus logsumexp, so the temporary softmax buffers are [T, V] instead of [B, T, V];
    half-precision rows are upcast to float32 (logsumexp in bf16 loses the small log-probs).
    Negative labels (e.g. -100 padding) read entry 0: mask those positions.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on [B, T]")
    labels = labels.clamp(min=0)
    rows = []
    for row_logits, row_labels in zip(logits, labels):
        row = _scaled_row(row_logits, temperature)
        picked = row.gather(-1, row_labels.unsqueeze(-1)).squeeze(-1)
        rows.append(picked - torch.logsumexp(row, dim=-1))
    if not rows:
        return logits.new_zeros(labels.shape, dtype=torch.float32)
    return torch.stack(rows)


def entropy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """[B, T] entropy (nats) of softmax(logits / temperature): the policy's uncertainty per
    position, watched for entropy collapse. Row by row, for the same memory reason."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    rows = []
    for row_logits in logits:
        logp = torch.log_softmax(_scaled_row(row_logits, temperature), dim=-1)
        rows.append(-(logp.exp() * logp).sum(dim=-1))
    if not rows:
        return logits.new_zeros(logits.shape[:-1], dtype=torch.float32)
    return torch.stack(rows)


def _scaled_row(row: Tensor, temperature: float) -> Tensor:
    if row.dtype in (torch.float16, torch.bfloat16):
        row = row.float()
    return row / temperature if temperature != 1.0 else row
