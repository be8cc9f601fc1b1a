"""Advantage estimators: one score per completion from the rewards of its group (and, for
some, of the whole batch). Each is a registered pure function (algos/registry.py), chosen by
`algo.advantage` with `algo.advantage_options`.

Inputs the trainer supplies: `rewards` [B] laid out group by group (G consecutive
completions per prompt), `group_size` G, `lengths` [B] completion tokens (for estimators
that weigh by tokens). A group whose rewards all agree carries no signal and gets exactly 0
under every group-baselined estimator.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from thinkrl.algos.registry import Registry

ADVANTAGES = Registry("advantage estimator", inputs=("rewards", "group_size", "lengths"))


def _groups(rewards: Tensor, group_size: int) -> Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
    return rewards.to(dtype).view(-1, group_size)


def _zero_flat_groups(advantages: Tensor, groups: Tensor) -> Tensor:
    """Exactly 0 where a group agrees, not mean-rounding noise divided by a small std."""
    flat = groups.amax(dim=1) == groups.amin(dim=1)
    return advantages.masked_fill(flat.unsqueeze(1), 0.0).reshape(-1)


@ADVANTAGES.register("grpo")
def group_advantages(rewards: Tensor, group_size: int, *, scale: Literal["std", "none"] = "std",
                     level: Literal["group", "batch"] = "group", eps: float = 1e-4) -> Tensor:
    """GRPO: reward minus the group's mean, over the group's std (scale=none: Dr. GRPO).

    GRPO needs no value model because the group's mean reward is the baseline.
    `scale="none"` only subtracts the mean (Dr. GRPO: std scaling over-weights groups that
    nearly all agree). `level="batch"` keeps the per-group mean but divides by the std of all
    rewards in the batch (TRL's `scale_rewards="batch"`), steadier than a small group's.
    The std is Bessel-corrected (n-1), as `torch.std` in TRL and verl, so the advantages
    match theirs number for number ([1, 0] -> +-0.707); the choice only rescales every
    advantage by sqrt(n/(n-1)), a learning-rate factor.
    """
    if scale not in ("std", "none"):
        raise ValueError(f"scale must be 'std' or 'none', got {scale!r}")
    if level not in ("group", "batch"):
        raise ValueError(f"level must be 'group' or 'batch', got {level!r}")
    groups = _groups(rewards, group_size)
    advantages = groups - groups.mean(dim=1, keepdim=True)
    if scale == "std":
        if level == "group":
            if group_size < 2:
                raise ValueError("std scaling per group needs group_size >= 2")
            std = groups.std(dim=1, keepdim=True)
        else:
            std = groups.flatten().std() if groups.numel() > 1 else groups.new_zeros(())
        advantages = advantages / (std + eps)
    return _zero_flat_groups(advantages, groups)


@ADVANTAGES.register("rloo")
def rloo(rewards: Tensor, group_size: int) -> Tensor:
    """RLOO: reward minus the mean of the *other* completions of the prompt (leave-one-out).

    r_i - mean_{j != i} r_j = G/(G-1) (r_i - mean_j r_j): an unbiased baseline (it does not
    depend on the sample it scores), no std scaling; equal to TRL's and verl's RLOO.
    """
    if group_size < 2:
        raise ValueError("RLOO needs group_size >= 2 (a baseline from the others)")
    groups = _groups(rewards, group_size)
    advantages = (groups - groups.mean(dim=1, keepdim=True)) * (group_size / (group_size - 1))
    return _zero_flat_groups(advantages, groups)


def _whiten_over_tokens(values: Tensor, lengths: Tensor, eps: float) -> Tensor:
    """(v - mean) / sqrt(var + eps), mean and (Bessel-corrected) variance over completion
    tokens: each completion counts once per token, as the token-level whitening of
    OpenRLHF and verl (`masked_whiten`) does."""
    weights = lengths.to(values.dtype)
    tokens = weights.sum()
    if tokens <= 1:
        return torch.zeros_like(values)
    mean = (values * weights).sum() / tokens
    var = ((values - mean) ** 2 * weights).sum() / (tokens - 1)
    return (values - mean) * torch.rsqrt(var + eps)


@ADVANTAGES.register("reinforce_pp")
def reinforce_pp(rewards: Tensor, lengths: Tensor, *, eps: float = 1e-8) -> Tensor:
    """REINFORCE++: the rewards whitened over the whole batch's tokens, no group baseline.

    With an outcome reward and gamma = 1 every token's return is the completion's reward;
    REINFORCE++ (Hu et al., 2025) normalises those over the batch, a baseline and scale
    steadier than a small group's. thinkrl's KL is a loss term (algo.beta), not folded into
    the reward as OpenRLHF's reinforce++ does by default: with beta=0 both are the same.
    """
    if rewards.dim() != 1 or lengths.shape != rewards.shape:
        raise ValueError(f"rewards and lengths must both be [B], got {tuple(rewards.shape)} and {tuple(lengths.shape)}")
    values = rewards.to(rewards.dtype if rewards.is_floating_point() else torch.float32)
    return _whiten_over_tokens(values, lengths, eps)


@ADVANTAGES.register("reinforce_pp_baseline")
def reinforce_pp_baseline(rewards: Tensor, group_size: int, lengths: Tensor, *, eps: float = 1e-8) -> Tensor:
    """REINFORCE++-baseline: reward minus the group's mean, then whitened over the batch's
    tokens (the group removes the prompt's difficulty, the batch sets the scale).

    As verl's `reinforce_plus_plus_baseline` and OpenRLHF's `reinforce_baseline`.
    """
    groups = _groups(rewards, group_size)
    if lengths.shape != rewards.shape:
        raise ValueError(f"lengths must be [B]={rewards.shape[0]}, got {tuple(lengths.shape)}")
    centred = (groups - groups.mean(dim=1, keepdim=True)).reshape(-1)
    return _whiten_over_tokens(centred, lengths, eps)


@ADVANTAGES.register("pass_at_k")
def pass_at_k_advantages(rewards: Tensor, group_size: int, *, k: int = 4, threshold: float = 1.0) -> Tensor:
    """Pass@k: the advantage of each completion for the group's pass@k reward, exactly.

    Score every k-subset of the group 1 if it holds a correct answer (reward >= threshold),
    baseline and scale by the mean R and std sqrt(R (1-R)) of that over all subsets, and
    give each completion the mean normalised score of the subsets it belongs to (Chen et al.,
    2025, "Pass@k Training"). In closed form, with n = G and c correct:
      R = 1 - C(n-c, k) / C(n, k);  correct: (1 - R) / std;
      wrong: (1 - R - C(n-c-1, k-1) / C(n-1, k-1)) / std.
    A wrong answer is penalised less when the group already has correct ones: it costs the
    k-subset nothing when another member solves it, which keeps exploring. k=1 is GRPO with
    the population std.
    """
    if not 1 <= k <= group_size:
        raise ValueError(f"pass@k advantages need 1 <= k <= group_size ({group_size}), got k={k}")
    groups = _groups(rewards, group_size)
    n = group_size
    out = torch.zeros_like(groups)
    for g, row in enumerate(groups):
        correct = row >= threshold
        c = int(correct.sum())
        if c in (0, n):
            continue
        mean = 1 - math.comb(n - c, k) / math.comb(n, k)
        std = math.sqrt(mean * (1 - mean))
        if std == 0:
            continue
        wrong_mean = 1 - math.comb(n - c - 1, k - 1) / math.comb(n - 1, k - 1)
        out[g] = torch.where(correct, (1 - mean) / std, (wrong_mean - mean) / std)
    return out.reshape(-1)
