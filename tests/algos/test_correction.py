"""Rollout corrections: with a deliberately mismatched sampler, the corrected policy gradient
is measurably closer to the exact on-policy gradient than the uncorrected one; the masks drop
what they say; the trainer logs the mismatch every step."""

from __future__ import annotations

import pytest
import torch

from thinkrl.algos import CORRECTIONS, policy_loss
from thinkrl.algos.correction import mismatch_stats
from thinkrl.models import load_model


def flat_grad(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_token_tis_recovers_the_on_policy_gradient_from_a_mismatched_sampler(tiny_random_model):
    """One-token completions after a fixed prompt: the exact on-policy gradient of E_pi[R] is
    a sum over the vocabulary. The sampler is deliberately off: it favours the rewarded
    tokens (q ~ pi e^{1.5 R}, as a sampler whose kernels or weights drift would, only more)."""
    model = load_model(str(tiny_random_model))
    prompt = torch.tensor([[5, 17, 9, 33, 21]])
    with torch.no_grad():
        logits = model(input_ids=prompt).logits[0, -1]
    vocab = logits.shape[0]
    reward = (torch.arange(vocab) % 3 == 0).float()  # pays a third of the vocabulary

    def grad_of(tokens: torch.Tensor, advantages: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        model.zero_grad()
        logp = torch.log_softmax(model(input_ids=prompt).logits[0, -1], dim=-1)[tokens][:, None]
        mask = torch.ones_like(logp)
        loss, _ = policy_loss(logp, logp.detach(), advantages, mask, aggregation="token",
                              sample_weights=None if weights is None else weights)
        loss.backward()
        return flat_grad(model)

    every = torch.arange(vocab)  # exact: - sum_y pi(y) R(y) grad log pi(y)
    pi = torch.softmax(logits, dim=-1)
    exact = grad_of(every, reward * pi * vocab, None)  # the token mean divides by `vocab`
    q = torch.softmax(logits + 1.5 * reward, dim=-1)
    tokens = torch.multinomial(q, 20000, replacement=True, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(len(tokens), 1)
    trainer = torch.log(pi[tokens])[:, None]
    sampler = torch.log(q[tokens])[:, None]
    uncorrected = grad_of(tokens, reward[tokens], None)
    weights = CORRECTIONS.call("token_tis", {"cap": 50.0}, old_logp=trainer, sampler_logp=sampler, mask=mask)
    corrected = grad_of(tokens, reward[tokens], weights)
    err_uncorrected = float((uncorrected - exact).norm() / exact.norm())
    err_corrected = float((corrected - exact).norm() / exact.norm())
    assert err_corrected < 0.5 * err_uncorrected, (err_corrected, err_uncorrected)
    stats = mismatch_stats(trainer, sampler, mask, weights)
    assert stats["mismatch/kl"] > 0.01 and stats["mismatch/ratio_max"] > 1.5 and stats["mismatch/ratio_mean"] < 1
    assert stats["mismatch/masked_token_share"] == 0.0


def test_sequence_masks_drop_whole_completions_outside_their_range():
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    sampler = torch.zeros(3, 4)
    trainer = torch.tensor([[0.3, 0.3, 0.3, 0.3],        # sequence ratio e^1.2 = 3.3, geometric e^0.3
                            [0.001, 0.001, 9.0, 9.0],    # padding carries garbage: ignored
                            [-0.001, 0.002, 0.0, 0.0]])  # nearly on-policy
    seq = CORRECTIONS.call("sequence_mask", {}, old_logp=trainer, sampler_logp=sampler, mask=mask)
    assert seq[0].sum() == 0 and torch.equal(seq[1], mask[1]) and torch.equal(seq[2], mask[2])
    geo = CORRECTIONS.call("geometric_mask", {"low": 0.99, "high": 1.01}, old_logp=trainer, sampler_logp=sampler,
                           mask=mask)
    assert geo[0].sum() == 0 and geo[1].sum() == 2 and geo[2].sum() == 4
    stats = mismatch_stats(trainer, sampler, mask, geo)
    assert stats["mismatch/masked_sequence_share"] == pytest.approx(1 / 3)
    assert stats["mismatch/masked_token_share"] == pytest.approx(4 / 10)
    assert torch.equal(CORRECTIONS.call("none", {}, old_logp=trainer, sampler_logp=sampler, mask=mask), mask)
    with pytest.raises(ValueError, match="low <= 1 <= high"):
        CORRECTIONS.call("geometric_mask", {"low": 1.1}, old_logp=trainer, sampler_logp=sampler, mask=mask)
