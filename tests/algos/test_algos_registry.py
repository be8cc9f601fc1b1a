"""The registered advantage estimators and policy losses (algos/advantages.py, losses.py,
aggregation.py, registry.py) against hand-computed values and their papers' formulas."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from thinkrl.algos import ADVANTAGES, AGGREGATIONS, LOSSES, policy_loss


def test_rloo_is_reward_minus_the_mean_of_the_others():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0])
    got = ADVANTAGES.call("rloo", rewards=rewards, group_size=3)
    want = [1 - 0.0, 0 - 0.5, 0 - 0.5, 1 - 2.0, 2 - 1.5, 2 - 1.5]
    assert torch.allclose(got, torch.tensor(want))


def test_pass_at_k_advantages_equal_the_mean_over_k_subsets():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    k, n = 3, 6
    subsets = list(itertools.combinations(range(n), k))
    scores = [float(any(rewards[list(s)] >= 1)) for s in subsets]
    mean = sum(scores) / len(scores)
    std = math.sqrt(mean * (1 - mean))
    want = [sum((sc - mean) / std for s, sc in zip(subsets, scores) if i in s) / math.comb(n - 1, k - 1)
            for i in range(n)]
    got = ADVANTAGES.call("pass_at_k", {"k": k}, rewards=rewards, group_size=n)
    assert torch.allclose(got, torch.tensor(want), atol=1e-6)
    assert torch.equal(ADVANTAGES.call("pass_at_k", {"k": 2}, rewards=torch.ones(4), group_size=4), torch.zeros(4))


def test_reinforce_pp_whitens_over_tokens_and_the_baseline_version_removes_the_group_mean():
    rewards, lengths = torch.tensor([1.0, 0.0, 3.0, 1.0]), torch.tensor([2, 1, 1, 3])
    tokens = torch.repeat_interleave(rewards, lengths)
    want = (rewards - tokens.mean()) / torch.sqrt(tokens.var() + 1e-8)
    assert torch.allclose(ADVANTAGES.call("reinforce_pp", rewards=rewards, lengths=lengths), want)
    centred = torch.tensor([0.5, -0.5, 1.0, -1.0])
    tokens = torch.repeat_interleave(centred, lengths)
    want = (centred - tokens.mean()) / torch.sqrt(tokens.var() + 1e-8)
    got = ADVANTAGES.call("reinforce_pp_baseline", rewards=rewards, group_size=2, lengths=lengths)
    assert torch.allclose(got, want)


def _batch():
    torch.manual_seed(0)
    logp = (torch.randn(3, 4) * 0.3 - 1).requires_grad_()
    old = logp.detach() + torch.randn(3, 4) * 0.4
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    return logp, old, torch.tensor([1.0, -1.0, 0.5]), mask


def test_gspo_gradient_is_the_sequence_ratio_formula():
    logp, old, adv, mask = _batch()
    loss, _ = policy_loss(logp, old, adv, mask, loss="gspo", loss_options={"eps_low": 10.0, "eps_high": 10.0})
    (grad,) = torch.autograd.grad(loss, logp)
    seq = torch.exp(((logp - old) * mask).sum(1) / mask.sum(1))
    reference = -(seq * adv).mean()  # unclipped: J = mean_i s_i A_i
    (want,) = torch.autograd.grad(reference, logp)
    assert torch.allclose(loss, reference) and torch.allclose(grad, want * mask, atol=1e-6)


def test_cispo_keeps_a_gradient_on_clipped_tokens_with_a_capped_weight():
    logp, old, adv, mask = _batch()
    loss, stats = policy_loss(logp, old, adv, mask, loss="cispo", aggregation="token")
    (grad,) = torch.autograd.grad(loss, logp)
    weight = torch.clamp(torch.exp(logp.detach() - old), 0.0, 1.28)
    want = -(weight * adv[:, None]) * mask / mask.sum()
    assert torch.allclose(grad, want, atol=1e-6) and stats["clip_fraction_high"] > 0
    assert bool((grad[mask > 0] != 0).all())


def test_dual_clip_caps_the_loss_of_negative_advantages():
    logp = torch.tensor([[math.log(8.0)]], requires_grad=True)
    old, mask = torch.zeros(1, 1), torch.ones(1, 1)
    loss, stats = policy_loss(logp, old, torch.tensor([-1.0]), mask, loss="dual_clip", loss_options={"clip_c": 3.0})
    assert loss.item() == pytest.approx(3.0) and stats["clip_fraction_dual"] == 1.0
    plain, _ = policy_loss(logp, old, torch.tensor([-1.0]), mask)
    assert plain.item() == pytest.approx(8.0)


def test_top_entropy_trains_only_the_highest_entropy_tokens():
    logp, old, adv, mask = _batch()
    entropy = torch.arange(12, dtype=torch.float32).view(3, 4)
    loss, stats = policy_loss(logp, logp.detach(), adv, mask, entropy=entropy, top_entropy=0.25)
    (grad,) = torch.autograd.grad(loss, logp)
    assert (grad != 0).sum() == 2 and stats["top_entropy_threshold"] == 10.0  # 2 of 9 kept tokens


def test_registry_names_options_and_suggests():
    assert {"grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline", "pass_at_k"} <= set(ADVANTAGES.names())
    assert {"ppo_clip", "dual_clip", "gspo", "cispo"} <= set(LOSSES.names())
    assert set(AGGREGATIONS.names()) == {"sequence", "token", "dr_grpo"}
    with pytest.raises(KeyError, match="did you mean 'gspo'"):
        LOSSES.get("gpso")
    with pytest.raises(ValueError, match="did you mean 'clip_c'"):
        LOSSES.check_options("dual_clip", {"clip_cc": 2})
    assert LOSSES.options("gspo") == {"eps_low": 3e-4, "eps_high": 4e-4}
    assert "clip_c=3.0" in LOSSES.describe()
