"""Policy losses: the per-token surrogate of each policy-gradient objective, registered by
name (`algo.loss`, options in `algo.loss_options`; `algo.eps_low`/`eps_high` are shorthands
for the options of those names). Aggregation over tokens is separate (algos/aggregation.py),
and so are the KL and entropy terms (algos/grpo.py:policy_loss adds them).

Inputs: `logp`, `old_logp` [B, T] log-probs of the sampled tokens under the policy being
trained and the one that sampled them; `advantages` [B]; `mask` [B, T] (1 on completion
tokens). Positions off the mask may hold anything (inf, nan): every function zeroes their
log-ratio with `where` before any exp, so they reach neither values nor gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from thinkrl.algos.registry import Registry

LOSSES = Registry("policy loss", inputs=("logp", "old_logp", "advantages", "mask"))


@dataclass
class TokenTerms:
    """What a loss computed, per token [B, T]: the loss to minimise (before masking and
    aggregation), the importance ratio, where the clip acted (low: A < 0 below 1 - eps_low;
    high: A > 0 above 1 + eps_high), and any other boolean masks worth reporting as a share
    of tokens (`extra`, e.g. dual-clip's cap)."""

    loss: Tensor
    ratio: Tensor
    clipped_low: Tensor
    clipped_high: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)


def _log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    keep = mask > 0
    return torch.where(keep, logp - old_logp.to(logp.dtype), torch.zeros_like(logp))


def _clip_terms(ratio: Tensor, adv: Tensor, mask: Tensor, eps_low: float, eps_high: float) -> TokenTerms:
    """PPO's pessimistic bound: -min(rho A, clip(rho, 1-eps_low, 1+eps_high) A)."""
    loss = -torch.minimum(ratio * adv, torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv)
    keep = mask > 0
    low = (ratio < 1.0 - eps_low) & (adv < 0) & keep
    high = (ratio > 1.0 + eps_high) & (adv > 0) & keep
    return TokenTerms(loss, ratio, low, high)


def _check(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    if logp.shape != old_logp.shape or logp.shape != mask.shape:
        raise ValueError(f"logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)} and mask "
                         f"{tuple(mask.shape)} must have the same [B, T] shape")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be [B]={logp.shape[0]}, got shape {tuple(advantages.shape)}")
    return advantages.to(logp.dtype).unsqueeze(1)


@LOSSES.register("ppo_clip")
def ppo_clip(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
             eps_low: float = 0.2, eps_high: float = 0.2) -> TokenTerms:
    """PPO/GRPO's clipped ratio per token; eps_high > eps_low is DAPO's clip-higher.

    -min(rho A, clip(rho, 1-eps_low, 1+eps_high) A), rho = exp(logp - old_logp): a token
    whose ratio has left the trust region in the advantage's direction gets no gradient.
    """
    adv = _check(logp, old_logp, advantages, mask)
    return _clip_terms(torch.exp(_log_ratio(logp, old_logp, mask)), adv, mask, eps_low, eps_high)


@LOSSES.register("dual_clip")
def dual_clip(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
              eps_low: float = 0.2, eps_high: float = 0.2, clip_c: float = 3.0) -> TokenTerms:
    """PPO-clip with a cap for negative advantages (dual-clip, Ye et al. 2020).

    For A < 0 the clipped loss max(-rho A, -clip(rho) A) grows without bound in rho, so one
    token the policy now likes far more than the sampler did can dominate the batch; the cap
    min(that, -clip_c A) bounds it (its gradient is then 0). As verl's `clip_ratio_c`.
    """
    if clip_c <= 1:
        raise ValueError(f"dual-clip needs clip_c > 1, got {clip_c}")
    adv = _check(logp, old_logp, advantages, mask)
    terms = _clip_terms(torch.exp(_log_ratio(logp, old_logp, mask)), adv, mask, eps_low, eps_high)
    cap = -clip_c * adv
    capped = (adv < 0) & (terms.loss > cap) & (mask > 0)
    terms.loss = torch.where(adv < 0, torch.minimum(terms.loss, cap), terms.loss)
    terms.extra["clip_fraction_dual"] = capped
    return terms


@LOSSES.register("gspo")
def gspo(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
         eps_low: float = 3e-4, eps_high: float = 4e-4) -> TokenTerms:
    """GSPO: one importance ratio per completion, the geometric mean of its tokens' ratios,
    clipped as a whole (Zheng et al. 2025; the paper's clip range 3e-4 / 4e-4).

    s_i = exp(mean_t (logp - old_logp)). Written per token as s_i,t = sg(s_i) * pi/sg(pi)
    (GSPO-token with A_i,t = A_i), whose value is s_i and whose gradient is s_i grad logp_t,
    so with the `sequence` aggregation (the paper's 1/|y_i| sum over tokens) the gradient is
    exactly sequence-level GSPO's. verl computes it the same way (log-ratio clamped at 10
    there; not here, where the clip already bounds what gets a gradient).
    """
    adv = _check(logp, old_logp, advantages, mask)
    log_ratio = _log_ratio(logp, old_logp, mask)
    weights = (mask > 0).to(logp.dtype)
    sequence = (log_ratio.sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)).detach()
    keep = mask > 0
    token_logp = torch.where(keep, logp, torch.zeros_like(logp))
    ratio = torch.exp(sequence.unsqueeze(1) + token_logp - token_logp.detach())
    return _clip_terms(ratio, adv, mask, eps_low, eps_high)


@LOSSES.register("cispo")
def cispo(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
          eps_low: float = 1.0, eps_high: float = 0.28) -> TokenTerms:
    """CISPO: REINFORCE weighted by a clipped, stop-gradient importance ratio (MiniMax-M1).

    loss = -sg(clip(rho, 1-eps_low, 1+eps_high)) A logp: the clip bounds the weight, not the
    update, so every token keeps a gradient (PPO-clip drops the rare tokens whose ratio moved
    most, often the "wait"/"recheck" forks). eps_low=1 is the paper's no lower bound.
    At rho = 1 its gradient equals PPO-clip's.
    """
    adv = _check(logp, old_logp, advantages, mask)
    ratio = torch.exp(_log_ratio(logp, old_logp, mask))
    weight = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high).detach()
    keep = mask > 0
    token_logp = torch.where(keep, logp, torch.zeros_like(logp))
    loss = -weight * adv * token_logp
    low = (ratio < 1.0 - eps_low) & keep
    high = (ratio > 1.0 + eps_high) & keep
    return TokenTerms(loss, ratio, low, high)
