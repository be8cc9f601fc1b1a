"""The GRPO objective put together (a registered loss, KL, entropy terms, a registered
aggregation), the k3 KL estimator, and token log-probs and entropies from logits. The
advantage estimators are in algos/advantages.py, the losses in algos/losses.py.

Pure functions of tensors, in the manner of verl's `core_algos`: no model, no config, no
I/O, so every number can be checked by hand (tests/algos/test_algos_grpo.py does).
Shapes: B samples laid out group by group (G consecutive completions per prompt), T token
positions, V vocabulary entries.
"""

from __future__ import annotations

import torch
from torch import Tensor

from thinkrl.algos.aggregation import AGGREGATIONS
from thinkrl.algos.losses import LOSSES


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
    eps_low: float | None = None,
    eps_high: float | None = None,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    aggregation: str = "sequence",
    max_len_norm: int | None = None,
    *,
    loss: str = "ppo_clip",
    loss_options: dict | None = None,
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
    top_entropy: float = 1.0,
    sample_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The loss to minimise and what it did: a registered policy loss per token
    (algos/losses.py, default PPO-clip), plus beta * k3 KL to the reference, minus an entropy
    bonus, kept on the top-entropy tokens only if asked, then a registered aggregation.

    logp, old_logp, ref_logp: [B, T] log-probs of the sampled tokens under the policy being
    trained, the policy that sampled them, and the frozen reference. advantages: [B], one per
    completion. mask: [B, T], 1 on completion tokens, 0 on prompt and padding.
    `eps_low`/`eps_high` (None: the loss's own default) are the loss's options of those names.
    `entropy` [B, T]: the policy's entropy per token; with `entropy_coef` > 0 it must carry
    its gradient, the bonus is `- entropy_coef * H`. `top_entropy` = rho < 1 trains only on the
    rho share of completion tokens with the highest entropy (the "forking" tokens, Wang et
    al. 2025, "the 80/20 rule"), the normaliser unchanged as in their objective; the share
    is taken over this call's tokens. `sample_weights` [B, T] (detached) scale each token's
    policy-gradient term: a rollout correction's importance weights (algos/correction.py),
    0 where it masks a token out.

    Stats (over completion tokens): clip_fraction_low (A < 0, rho < 1-eps_low),
    clip_fraction_high (A > 0, rho > 1+eps_high), clip_fraction (either), ratio_mean, the
    loss's own shares (e.g. clip_fraction_dual), kl when ref_logp is given, and
    top_entropy_threshold when tokens were selected.
    """
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (the reference model's log-probs)")
    if not 0 < top_entropy <= 1:
        raise ValueError(f"top_entropy must be in (0, 1], got {top_entropy}")
    if (entropy_coef > 0 or top_entropy < 1) and (entropy is None or entropy.shape != logp.shape):
        raise ValueError("an entropy bonus or top-entropy selection needs entropy [B, T] like logp")
    AGGREGATIONS.get(aggregation)
    options = dict(loss_options or {})
    for name, value in (("eps_low", eps_low), ("eps_high", eps_high)):
        if value is not None:
            options.setdefault(name, value)
    terms = LOSSES.call(loss, options, logp=logp, old_logp=old_logp, advantages=advantages, mask=mask)

    keep = mask > 0
    weights = keep.to(logp.dtype)
    per_token = terms.loss
    if sample_weights is not None:
        if sample_weights.shape != logp.shape:
            raise ValueError(f"sample_weights {tuple(sample_weights.shape)} must match logp {tuple(logp.shape)}")
        per_token = per_token * sample_weights.detach().to(per_token.dtype)
    kl = None
    if ref_logp is not None:
        if ref_logp.shape != logp.shape:
            raise ValueError(f"ref_logp {tuple(ref_logp.shape)} must match logp {tuple(logp.shape)}")
        zero = torch.zeros_like(logp)
        kl = kl_k3(torch.where(keep, logp, zero), torch.where(keep, ref_logp, zero))  # 0 off the mask
        if beta > 0:
            per_token = per_token + beta * kl
    if entropy_coef > 0:
        per_token = per_token - entropy_coef * torch.where(keep, entropy, torch.zeros_like(entropy))
    selected = keep
    threshold = None
    if top_entropy < 1:
        threshold = top_entropy_threshold(entropy.detach(), keep, top_entropy)
        selected = keep & (entropy.detach() >= threshold)
    per_token = torch.where(selected, per_token, torch.zeros_like(per_token))
    total = AGGREGATIONS.call(aggregation, per_token=per_token, weights=weights, max_len=max_len_norm)

    with torch.no_grad():
        tokens = weights.sum().clamp(min=1.0)
        low, high = terms.clipped_low & keep, terms.clipped_high & keep
        stats = {
            "clip_fraction_low": float(low.sum() / tokens),
            "clip_fraction_high": float(high.sum() / tokens),
            "clip_fraction": float((low | high).sum() / tokens),
            "ratio_mean": float((terms.ratio * weights).sum() / tokens),
        }
        for name, share in terms.extra.items():
            stats[name] = float((share & keep).sum() / tokens)
        if kl is not None:
            stats["kl"] = float((kl * weights).sum() / tokens)
        if threshold is not None:
            stats["top_entropy_threshold"] = float(threshold)
    return total, stats


def top_entropy_threshold(entropy: Tensor, keep: Tensor, share: float) -> Tensor:
    """The entropy at or above which `share` of the kept tokens lie (at least one token)."""
    values = entropy[keep]
    if values.numel() == 0:
        return entropy.new_tensor(float("inf"))
    count = max(1, round(share * values.numel()))
    return values.topk(count).values[-1]


def adapt_entropy_coef(coef: float, entropy: float, target: float, step: float, ceiling: float) -> float:
    """The entropy bonus's next coefficient: up by `step` while the policy's mean token
    entropy is below `target`, down by `step` while above, kept in [0, ceiling]. A
    proportional controller would chase noise; a fixed step changes the objective slowly,
    as in Skywork-OR1's adaptive entropy control."""
    coef = coef + step if entropy < target else coef - step
    return min(max(coef, 0.0), ceiling)


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
