"""The GRPO math against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from thinkrl.algos import (
    entropy_from_logits,
    group_advantages,
    kl_k3,
    policy_loss,
    token_logprobs,
)

# ---------------------------------------------------------------- advantages


def test_group_of_two_right_two_wrong_uses_unbiased_std():
    # mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=4, eps=0.0)
    expected = 0.5 / math.sqrt(1 / 3)
    assert torch.allclose(adv, torch.tensor([expected, -expected, -expected, expected]))
    assert adv[0].item() == pytest.approx(0.8660254, abs=1e-6)


def test_eps_is_added_to_the_std():
    adv = group_advantages(torch.tensor([1.0, 0.0]), group_size=2, eps=0.1)
    # unbiased std of [1, 0] is 0.70711
    assert adv.tolist() == pytest.approx([0.5 / (math.sqrt(0.5) + 0.1), -0.5 / (math.sqrt(0.5) + 0.1)])


def test_groups_are_normalised_separately_and_flat_groups_get_zero():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.3, 0.3, 0.3, 0.3, 5.0, 5.0, 5.0, 5.0])
    adv = group_advantages(rewards, group_size=4)
    assert torch.equal(adv[4:], torch.zeros(8))
    assert adv[:4].tolist() == pytest.approx([0.86587, -0.86587, -0.86587, 0.86587], abs=1e-5)


def test_scale_none_is_dr_grpo_mean_centring_only():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 4.0]), group_size=3, scale="none")
    assert adv.tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, -2.0, 0.0, 2.0])


def test_batch_level_keeps_group_mean_and_divides_by_batch_std():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 3.0])
    adv = group_advantages(rewards, group_size=4, level="batch", eps=0.0)
    batch_std = math.sqrt(sum((r - 1.375) ** 2 for r in rewards.tolist()) / 7)  # unbiased, over all 8
    expected = [0.5, -0.5, -0.5, 0.5, -0.25, -0.25, -0.25, 0.75]
    assert adv.tolist() == pytest.approx([e / batch_std for e in expected], abs=1e-6)


def test_batch_level_still_zeroes_flat_groups():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.7, 0.7]), group_size=2, level="batch")
    assert adv[2:].tolist() == [0.0, 0.0]
    assert adv[0] > 0 > adv[1]


def test_integer_rewards_give_float_advantages():
    adv = group_advantages(torch.tensor([1, 0]), group_size=2, eps=0.0)
    assert adv.dtype == torch.float32
    assert adv.tolist() == pytest.approx([math.sqrt(0.5), -math.sqrt(0.5)])


@pytest.mark.parametrize("rewards,group_size", [(torch.zeros(6), 4), (torch.zeros(2, 2), 2)])
def test_rewards_that_do_not_form_groups_are_rejected(rewards, group_size):
    with pytest.raises(ValueError):
        group_advantages(rewards, group_size)


# ---------------------------------------------------------------- KL


def test_k3_values_by_hand():
    logp = torch.log(torch.tensor([0.5, 0.25, 0.1]))
    ref = torch.log(torch.tensor([0.25, 0.5, 0.1]))
    # ref/p - log(ref/p) - 1
    expected = [0.5 + math.log(2) - 1, 2 - math.log(2) - 1, 0.0]
    assert kl_k3(logp, ref).tolist() == pytest.approx(expected, abs=1e-6)


def test_k3_is_never_negative_and_zero_only_when_equal():
    gen = torch.Generator().manual_seed(0)
    logp = torch.randn(1000, generator=gen) * 3
    ref = torch.randn(1000, generator=gen) * 3
    assert (kl_k3(logp, ref) >= 0).all()
    assert torch.equal(kl_k3(logp, logp), torch.zeros(1000))


# ---------------------------------------------------------------- policy loss


def _leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def test_ratio_one_gives_the_vanilla_policy_gradient():
    gen = torch.Generator().manual_seed(1)
    logp = (torch.randn(3, 5, generator=gen, dtype=torch.float64) - 2).requires_grad_()
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float64)
    adv = torch.tensor([1.5, -0.5, 0.25], dtype=torch.float64)
    loss, stats = policy_loss(logp, logp.detach(), adv, mask)
    (grad,) = torch.autograd.grad(loss, logp)

    ref_leaf = logp.detach().clone().requires_grad_()
    reinforce = -((adv[:, None] * ref_leaf * mask).sum(1) / mask.sum(1)).mean()
    (expected,) = torch.autograd.grad(reinforce, ref_leaf)
    assert torch.allclose(grad, expected, atol=1e-12)
    assert stats["ratio_mean"] == pytest.approx(1.0)
    assert stats["clip_fraction"] == 0.0
    # the loss value itself is -mean(A) when every ratio is 1
    assert loss.item() == pytest.approx(-adv.mean().item())


@pytest.mark.parametrize(
    "advantage,ratio,clipped",
    [
        (1.0, 1.5, True),  # good sample already made much likelier: no further push
        (1.0, 0.5, False),  # good sample made less likely: still pushed up
        (-1.0, 0.5, True),  # bad sample already made much less likely: no further push
        (-1.0, 1.5, False),  # bad sample made likelier: still pushed down
        (1.0, 1.1, False),  # inside the trust region
    ],
)
def test_clipping_stops_the_gradient_only_on_the_side_that_gains(advantage, ratio, clipped):
    logp = _leaf([[math.log(ratio) - 1.0]])
    old = torch.tensor([[-1.0]], dtype=torch.float64)
    loss, stats = policy_loss(logp, old, torch.tensor([advantage], dtype=torch.float64),
                              torch.ones(1, 1, dtype=torch.float64), eps_low=0.2, eps_high=0.2)
    (grad,) = torch.autograd.grad(loss, logp)
    bound = 1.2 if ratio > 1 else 0.8
    if clipped:
        assert grad.item() == 0.0
        assert loss.item() == pytest.approx(-bound * advantage)
        assert stats["clip_fraction"] == 1.0
    else:
        # d(-ratio*A)/dlogp = -ratio*A
        assert grad.item() == pytest.approx(-ratio * advantage)
        assert loss.item() == pytest.approx(-ratio * advantage)
        assert stats["clip_fraction"] == 0.0


def test_clip_higher_uses_eps_high_above_and_eps_low_below():
    old = torch.zeros(1, 2, dtype=torch.float64)
    logp = _leaf([[math.log(1.25), math.log(0.85)]])
    # eps_high=0.28 leaves 1.25 unclipped for A>0; eps_low=0.1 clips 0.85 for A<0
    for adv in (1.0, -1.0):
        loss, _ = policy_loss(logp, old, torch.tensor([adv], dtype=torch.float64),
                              torch.ones(1, 2, dtype=torch.float64), eps_low=0.1, eps_high=0.28,
                              aggregation="token")
        (g,) = torch.autograd.grad(loss, logp)
        if adv > 0:
            assert g.tolist()[0] == pytest.approx([-1.25 / 2, -0.85 / 2])  # 1.25 < 1.28: not clipped
        else:
            assert g.tolist()[0] == pytest.approx([1.25 / 2, 0.0])  # 0.85 < 0.9: clipped


def test_clip_fractions_count_masked_tokens_only():
    ratios = torch.tensor([[1.5, 1.0, 0.5], [0.5, 1.5, 9.0]], dtype=torch.float64)
    old = torch.zeros(2, 3, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.float64)
    _, stats = policy_loss(ratios.log(), old, torch.tensor([1.0, -1.0], dtype=torch.float64), mask)
    assert stats["clip_fraction_high"] == pytest.approx(1 / 5)  # 1.5 with A>0
    assert stats["clip_fraction_low"] == pytest.approx(1 / 5)  # 0.5 with A<0
    assert stats["clip_fraction"] == pytest.approx(2 / 5)
    assert stats["ratio_mean"] == pytest.approx((1.5 + 1.0 + 0.5 + 0.5 + 1.5) / 5)
    assert "kl" not in stats


def _two_rows():
    logp = _leaf([[-1.0, -2.0, -3.0], [-0.5, -4.0, -4.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.float64)
    return logp, mask, torch.tensor([1.0, -3.0], dtype=torch.float64)


@pytest.mark.parametrize(
    "aggregation,expected",
    [
        ("sequence", ((-1 - 1) / 2 + 3 / 1) / 2),  # per-row means [-1, 3], then their mean
        ("token", (-1 - 1 + 3) / 3),  # all three tokens weigh the same
        ("dr_grpo", (-1 - 1 + 3) / (2 * 4)),  # B * max_len_norm, a constant
    ],
)
def test_aggregations_by_hand(aggregation, expected):
    logp, mask, adv = _two_rows()
    loss, _ = policy_loss(logp, logp.detach(), adv, mask, aggregation=aggregation, max_len_norm=4)
    assert loss.item() == pytest.approx(expected)
    (grad,) = torch.autograd.grad(loss, logp)
    per_token_grad = {"sequence": [[-1 / 4, -1 / 4, 0], [3 / 2, 0, 0]],
                      "token": [[-1 / 3, -1 / 3, 0], [1.0, 0, 0]],
                      "dr_grpo": [[-1 / 8, -1 / 8, 0], [3 / 8, 0, 0]]}[aggregation]
    torch.testing.assert_close(grad, torch.tensor(per_token_grad, dtype=torch.float64))


def test_dr_grpo_without_a_length_constant_is_an_error():
    logp, mask, adv = _two_rows()
    with pytest.raises(ValueError, match="needs max_len"):
        policy_loss(logp, logp.detach(), adv, mask, aggregation="dr_grpo")


def test_kl_term_adds_beta_times_k3_and_its_gradient():
    logp = _leaf([[math.log(0.5), math.log(0.2)]])
    ref = torch.log(torch.tensor([[0.25, 0.2]], dtype=torch.float64))
    mask = torch.ones(1, 2, dtype=torch.float64)
    loss, stats = policy_loss(logp, logp.detach(), torch.tensor([0.0], dtype=torch.float64), mask,
                              ref_logp=ref, beta=0.1)
    k3 = 0.5 + math.log(2) - 1  # first token; the second matches the reference
    assert stats["kl"] == pytest.approx(k3 / 2)
    assert loss.item() == pytest.approx(0.1 * k3 / 2)
    (grad,) = torch.autograd.grad(loss, logp)
    # d/dlogp [e^(ref-logp) - (ref-logp) - 1] = 1 - ref/p = 0.5 ; then * beta / 2 tokens
    torch.testing.assert_close(grad, torch.tensor([[0.1 * 0.5 / 2, 0.0]], dtype=torch.float64))


def test_kl_is_reported_but_not_trained_when_beta_is_zero():
    logp = _leaf([[math.log(0.5)]])
    ref = torch.log(torch.tensor([[0.25]], dtype=torch.float64))
    loss, stats = policy_loss(logp, logp.detach(), torch.tensor([0.0], dtype=torch.float64),
                              torch.ones(1, 1, dtype=torch.float64), ref_logp=ref, beta=0.0)
    assert stats["kl"] == pytest.approx(0.5 + math.log(2) - 1)
    assert loss.item() == 0.0


def test_beta_without_reference_is_an_error():
    logp, mask, adv = _two_rows()
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, logp.detach(), adv, mask, beta=0.1)


@pytest.mark.parametrize("aggregation", ["sequence", "token", "dr_grpo"])
def test_prompt_and_padding_tokens_change_nothing_even_with_garbage(aggregation):
    gen = torch.Generator().manual_seed(2)
    clean = torch.randn(2, 6, generator=gen, dtype=torch.float64) - 1
    old = clean + 0.3 * torch.randn(2, 6, generator=gen, dtype=torch.float64)
    ref = clean + 0.3 * torch.randn(2, 6, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]], dtype=torch.float64)
    adv = torch.tensor([0.7, -1.2], dtype=torch.float64)
    off = mask == 0
    garbage = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e6, -1e6, float("nan")] * 2,
                           dtype=torch.float64).view(2, 6)

    def run(logp_values, old_values, ref_values):
        leaf = logp_values.clone().requires_grad_()
        loss, stats = policy_loss(leaf, old_values, adv, mask, eps_low=0.1, eps_high=0.15, ref_logp=ref_values,
                                  beta=0.05, aggregation=aggregation, max_len_norm=6)
        (grad,) = torch.autograd.grad(loss, leaf)
        return loss, stats, grad

    loss_a, stats_a, grad_a = run(clean, old, ref)
    loss_b, stats_b, grad_b = run(torch.where(off, garbage, clean), torch.where(off, garbage.flip(1), old),
                                  torch.where(off, -garbage, ref))
    assert torch.isfinite(loss_b)
    assert loss_a.item() == loss_b.item()
    assert torch.equal(grad_a, grad_b)
    assert torch.equal(grad_b[off], torch.zeros(int(off.sum()), dtype=torch.float64))
    assert stats_a == stats_b


# ---------------------------------------------------------------- log-probs and entropy


def test_token_logprobs_match_log_softmax_with_temperature():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 4, 11, generator=gen) * 4
    labels = torch.randint(11, (3, 4), generator=gen)
    for temperature in (1.0, 0.6):
        expected = torch.log_softmax(logits / temperature, -1).gather(-1, labels[..., None]).squeeze(-1)
        assert torch.allclose(token_logprobs(logits, labels, temperature), expected, atol=1e-5)


def test_token_logprobs_gradient_matches_log_softmax():
    gen = torch.Generator().manual_seed(4)
    base = torch.randn(2, 3, 7, generator=gen, dtype=torch.float64)
    labels = torch.randint(7, (2, 3), generator=gen)
    a = base.clone().requires_grad_()
    b = base.clone().requires_grad_()
    token_logprobs(a, labels, 0.7).sum().backward()
    torch.log_softmax(b / 0.7, -1).gather(-1, labels[..., None]).sum().backward()
    assert torch.allclose(a.grad, b.grad)


def test_bfloat16_logits_are_scored_in_float32():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 5, 300, generator=gen) * 8
    labels = torch.randint(300, (2, 5), generator=gen)
    half = token_logprobs(logits.bfloat16(), labels)
    exact = torch.log_softmax(logits.bfloat16().float(), -1).gather(-1, labels[..., None]).squeeze(-1)
    assert half.dtype == torch.float32
    assert torch.allclose(half, exact, atol=1e-5)


def test_negative_labels_do_not_crash():
    out = token_logprobs(torch.zeros(1, 2, 4), torch.tensor([[-100, 2]]))
    assert out[0, 1].item() == pytest.approx(math.log(0.25))


def test_entropy_by_hand():
    uniform = torch.zeros(1, 1, 4)
    certain = torch.tensor([[[100.0, 0.0, 0.0, 0.0]]])
    two_way = torch.tensor([[[0.0, 0.0, -1e4, -1e4]]])
    logits = torch.cat([uniform, certain, two_way], dim=1)
    assert entropy_from_logits(logits)[0].tolist() == pytest.approx([math.log(4), 0.0, math.log(2)], abs=1e-5)
    # temperature sharpens: logits [1, 0] at T=0.5 are [2, 0]
    sharp = entropy_from_logits(torch.tensor([[[1.0, 0.0]]]), temperature=0.5)
    p = 1 / (1 + math.exp(-2))
    assert sharp.item() == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)), abs=1e-6)
