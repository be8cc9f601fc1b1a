"""Algorithms chosen by name in the GRPO config: validated when the config is read, wired
into the real update, and the state they keep (entropy coefficient, pass rates) resumed."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import Accelerator
from test_policy_logprobs import fixed_rollout
from test_train_grpo import small_config

from thinkrl.algos import LOSSES, adapt_entropy_coef
from thinkrl.algos.losses import TokenTerms
from thinkrl.errors import ConfigError
from thinkrl.models import load_model
from thinkrl.train.curriculum import PassRates, group_pass_rates
from thinkrl.train.grpo import train_grpo, update_policy
from thinkrl.train.grpo_metrics import LearningWarnings
from thinkrl.train.model_setup import build_optimizer
from thinkrl.train.policy import build_policy_batch, policy_logprobs
from thinkrl.train.tracking import read_metrics


@pytest.mark.parametrize(("override", "message"), [
    (["algo.loss=gspoo"], "did you mean 'gspo'"),
    (["algo.advantage=rlo"], "did you mean 'rloo'"),
    (["algo.aggregation=tokens"], "did you mean 'token'"),
    (["algo.loss=dual_clip", "algo.loss_options={clip_cc: 2.0}"], "has no option 'clip_cc'; did you mean 'clip_c'"),
    (["algo.loss=dual_clip", "algo.loss_options={clip_c: big}"], "option 'clip_c' must be float"),
    (["algo.advantage_options={k: 2.5}"], "no option 'k'"),  # grpo takes no k
    (["algo.advantage_options={scale: sd}"], "'std' or 'none'"),
])
def test_unknown_algorithms_and_options_fail_when_the_config_is_read(tiny_random_model, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message) as info:
        small_config(tiny_random_model, tmp_path, *override)
    assert "algo." in str(info.value)  # the field is named


def test_grpo_shorthands_belong_to_grpo_and_must_agree_with_the_options(tiny_random_model, tmp_path):
    with pytest.raises(ConfigError, match="algo.scale"):
        small_config(tiny_random_model, tmp_path, "algo.advantage=rloo", "algo.scale=none")
    with pytest.raises(ConfigError, match="disagree"):
        small_config(tiny_random_model, tmp_path, "algo.eps_low=0.1", "algo.loss_options={eps_low: 0.3}")
    cfg = small_config(tiny_random_model, tmp_path, "algo.loss=cispo", "algo.eps_high=0.5")
    assert cfg.algo.loss_call_options() == {"eps_high": 0.5}  # eps_low stays CISPO's own default
    cfg = small_config(tiny_random_model, tmp_path, "algo.scale=none", "algo.advantage_options={eps: 0.01}")
    assert cfg.algo.advantage_call_options() == {"eps": 0.01, "scale": "none"}
    with pytest.raises(ConfigError, match="curriculum_reward"):
        small_config(tiny_random_model, tmp_path, "algo.curriculum=pass_rate", "algo.curriculum_reward=accuracy")


def run_update(model_dir, tmp_path, *overrides, rollout=None):
    model = load_model(str(model_dir))
    cfg = small_config(model_dir, tmp_path, "optim.lr=0.01", *overrides)
    optimizer, scheduler = build_optimizer(model, cfg.optim, total_updates=cfg.algo.mu * cfg.optim.updates_per_pass)
    stats = update_policy(Accelerator(cpu=True), model, None, optimizer, scheduler, rollout or fixed_rollout(), 0, cfg)
    return model, stats


@pytest.mark.parametrize(("loss", "own_stat"), [("dual_clip", "clip_fraction_dual"), ("gspo", None), ("cispo", None)])
def test_each_registered_loss_trains_through_the_real_update(tiny_random_model, tmp_path, loss, own_stat):
    base = load_model(str(tiny_random_model))
    model, stats = run_update(tiny_random_model, tmp_path, f"algo.loss={loss}", "algo.mu=2")
    assert any(not torch.equal(a, b) for a, b in zip(base.parameters(), model.parameters()))
    assert stats["grad_norm"] > 0 and stats["ratio_mean"] != 1.0  # the second pass sees a moved policy
    if own_stat:
        assert own_stat in stats


def test_a_loss_registered_in_user_code_is_chosen_from_the_config(tiny_random_model, tmp_path):
    calls = []

    @LOSSES.register("test_reinforce")
    def test_reinforce(logp, advantages, mask, *, scale: float = 1.0) -> TokenTerms:
        """Plain REINFORCE: -A log p."""
        calls.append(scale)
        never = torch.zeros_like(mask, dtype=torch.bool)
        return TokenTerms(loss=-scale * advantages[:, None] * logp, ratio=torch.ones_like(logp),
                          clipped_low=never, clipped_high=never)

    _, stats = run_update(tiny_random_model, tmp_path, "algo.loss=test_reinforce", "algo.loss_options={scale: 2.0}")
    assert calls and set(calls) == {2.0}
    assert stats["clip_fraction"] == 0.0 and stats["grad_norm"] > 0


def test_the_entropy_bonus_gradient_of_the_chunked_head_equals_full_logits(tiny_random_model):
    model = load_model(str(tiny_random_model))
    batch = build_policy_batch(fixed_rollout().completions, 0)
    grads = []
    for chunk in (0, 5):  # full logits, then 5-token chunks through head_logprobs
        model.zero_grad()
        _, entropy = policy_logprobs(model, batch, 0.8, with_entropy=True, chunk_tokens=chunk, entropy_grad=True)
        (entropy * batch.loss_mask).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    full, chunked = grads
    assert full and set(full) == set(chunked)
    for name in full:
        assert torch.allclose(full[name], chunked[name], atol=1e-5, rtol=1e-4), name
    _, detached = policy_logprobs(model, batch, 0.8, with_entropy=True)
    assert not detached.requires_grad  # a metric unless a bonus trains on it


def test_an_entropy_bonus_raises_the_policys_entropy(tiny_random_model, tmp_path):
    rollout = fixed_rollout()
    rollout.advantages = torch.zeros_like(rollout.advantages)  # only the bonus moves the policy
    batch = build_policy_batch(rollout.completions, 0)

    def mean_entropy(model) -> float:
        with torch.no_grad():
            _, h = policy_logprobs(model, batch, 1.0, with_entropy=True)
        return float((h * batch.loss_mask).sum() / batch.loss_mask.sum())

    before = mean_entropy(load_model(str(tiny_random_model)))
    model, stats = run_update(tiny_random_model, tmp_path, "algo.entropy_coef=1.0", "rollout.temperature=1.0",
                              rollout=rollout)
    assert stats["grad_norm"] > 0
    assert mean_entropy(model) > before


def test_top_entropy_trains_on_the_highest_entropy_tokens_only(tiny_random_model, tmp_path):
    _, all_tokens = run_update(tiny_random_model, tmp_path, "algo.top_entropy=1.0")
    _, top = run_update(tiny_random_model, tmp_path, "algo.top_entropy=0.2")
    assert "top_entropy_threshold" in top and "top_entropy_threshold" not in all_tokens
    assert top["grad_norm"] < all_tokens["grad_norm"]  # a fifth of the tokens carry the gradient


def test_adaptive_entropy_coefficient_moves_toward_the_target_within_bounds():
    assert adapt_entropy_coef(0.0, entropy=0.1, target=0.5, step=0.01, ceiling=0.02) == pytest.approx(0.01)
    assert adapt_entropy_coef(0.015, entropy=0.1, target=0.5, step=0.01, ceiling=0.02) == 0.02
    assert adapt_entropy_coef(0.005, entropy=0.9, target=0.5, step=0.01, ceiling=0.02) == 0.0


def test_entropy_collapse_is_warned_about_once(caplog):
    warnings = LearningWarnings(patience=2, entropy_floor=0.05)
    said = [warnings.check(step, {"entropy": 0.01}) for step in range(1, 5)]
    assert [bool(s) for s in said] == [False, True, False, False]
    assert "entropy collapse" in said[1][0]
    assert not LearningWarnings(patience=1, entropy_floor=0.05).check(1, {"entropy": 0.5})


def test_pass_rates_draw_unsolved_and_solved_prompts_less():
    rates = PassRates(size=10, weight=0.0, seed=3)
    rates.observe([(0, 0.0), (1, 1.0), (2, 0.5), (3, 0.0)])
    for step in range(1, 30):
        drawn = rates.draw(4, step)
        assert len(set(drawn)) == 4 and not {0, 1, 3} & set(drawn)
    assert rates.draw(4, 7) == rates.draw(4, 7)  # seeded by step
    counts = torch.zeros(10)
    softer = PassRates(size=10, weight=0.1, seed=3)
    softer.load(rates.state())
    for step in range(400):
        counts[softer.draw(2, step)] += 1
    assert counts[[0, 1, 3]].mean() < 0.3 * counts[[2, 4, 5, 6, 7, 8, 9]].mean()
    assert rates.draw(9, 1) and len(rates.draw(9, 1)) == 9  # more than the non-extreme prompts: the rest fill in
    metrics = rates.metrics([2, 0])
    assert metrics["curriculum/solved_share"] == 0.1 and metrics["curriculum/unsolved_share"] == 0.2
    assert metrics["curriculum/drawn_extreme_share"] == 0.5
    by_name, reasons = {"acc": [1, 1, 0, 1, 0, 0]}, {"acc": ["ok", "ok", "n/a", "ok", "ok", "ok"]}
    assert group_pass_rates([5, 8], by_name, reasons, "acc", 3, "n/a") == [(5, 1.0), (8, 1 / 3)]


def test_curriculum_and_adaptive_entropy_state_survive_a_resume(tiny_random_model, tmp_path):
    settings = ["run.steps=4", "run.save_every=1", "optim.lr=0.01", "algo.curriculum=pass_rate",
                "algo.curriculum_weight=0.0", "algo.entropy_target=10.0", "algo.entropy_coef_step=0.001"]
    train_grpo(small_config(tiny_random_model, tmp_path / "unbroken", *settings))
    broken = tmp_path / "broken"
    first = [s.replace("run.steps=4", "run.steps=2") for s in settings]
    train_grpo(small_config(tiny_random_model, broken, *first))
    state = json.loads((broken / "checkpoints" / "step-000002" / "trainer_state.json").read_text())
    assert state["pass_rates"] and state["entropy_coef"] == pytest.approx(0.002)
    train_grpo(small_config(tiny_random_model, broken, *settings, "resume=true"))
    got, want = read_metrics(broken / "metrics.jsonl"), read_metrics(tmp_path / "unbroken" / "metrics.jsonl")
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(got, want):
        for key in ("reward/mean", "curriculum/seen_share", "entropy_coef", "curriculum/drawn_extreme_share"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["step"], key)
    assert [r["entropy_coef"] for r in want] == pytest.approx([0.0, 0.001, 0.002, 0.003])
    assert all(r["curriculum/drawn_extreme_share"] == 0.0 for r in want)  # weight 0: never drawn again


def test_every_registered_estimator_runs_in_a_grpo_step(tiny_random_model, tmp_path):
    from thinkrl.algos import ADVANTAGES

    for name in ADVANTAGES.names():
        cfg = small_config(tiny_random_model, tmp_path / name, f"algo.advantage={name}", "run.steps=1")
        metrics = read_metrics(train_grpo(cfg).run_dir / "metrics.jsonl")
        assert len(metrics) == 1 and "loss" in metrics[0], name



def test_options_the_algorithm_rejects_for_this_run_fail_at_config_time(tiny_random_model, tmp_path):
    with pytest.raises(ConfigError, match=r"algo.advantage='pass_at_k'.*k <= group_size"):
        small_config(tiny_random_model, tmp_path, "algo.advantage=pass_at_k", "algo.advantage_options={k: 9}")
    small_config(tiny_random_model, tmp_path, "algo.advantage=pass_at_k", "algo.advantage_options={k: 4}")


def test_a_config_imports_the_module_that_registers_its_algorithm(tiny_random_model, tmp_path, monkeypatch):
    (tmp_path / "user_algos_for_test.py").write_text(
        "from thinkrl.algos import ADVANTAGES\n\n"
        "@ADVANTAGES.register('user_mean')\n"
        "def user_mean(rewards, group_size, *, shift: float = 0.0):\n"
        "    g = rewards.view(-1, group_size)\n"
        "    return (g - g.mean(1, keepdim=True)).reshape(-1) + shift\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="user_mean"):
        small_config(tiny_random_model, tmp_path, "algo.advantage=user_mean")
    cfg = small_config(tiny_random_model, tmp_path, "imports=[user_algos_for_test]", "algo.advantage=user_mean",
                       "algo.advantage_options={shift: 0.5}", "run.steps=1")
    metrics = read_metrics(train_grpo(cfg).run_dir / "metrics.jsonl")
    assert len(metrics) == 1
    with pytest.raises(ConfigError, match="cannot import 'no_such_module_here'"):
        small_config(tiny_random_model, tmp_path, "imports=[no_such_module_here]")


def engine_rollout(model_dir, temperature: float):
    """A rollout the transformers engine sampled at `temperature`, with its log-probs."""
    from thinkrl.models import load_tokenizer
    from thinkrl.rewards import RewardScores
    from thinkrl.rollout.base import SamplingParams
    from thinkrl.rollout.transformers_engine import TransformersEngine
    from thinkrl.train.rollouts import Rollout

    model, tokenizer = load_model(str(model_dir)), load_tokenizer(str(model_dir))
    rows = TransformersEngine(model, tokenizer).generate(["12+3=", "a", "7*8="], SamplingParams(
        n=4, max_new_tokens=12, temperature=temperature, seed=1))
    rewards = torch.randn(len(rows), generator=torch.Generator().manual_seed(2))
    return Rollout(examples=[None] * 3, completions=rows, rewards=rewards, advantages=rewards.clone(),
                   scores=RewardScores(total=rewards.tolist(), by_name={}, reasons={}), group_size=4)


def test_every_step_logs_the_mismatch_and_the_correction_masks_what_is_off(tiny_random_model, tmp_path):
    _, same = run_update(tiny_random_model, tmp_path, rollout=engine_rollout(tiny_random_model, 1.0))
    assert same["mismatch/kl"] < 1e-6 and abs(same["mismatch/ratio_max"] - 1) < 1e-4
    assert same["mismatch/masked_sequence_share"] == 0.0
    off = engine_rollout(tiny_random_model, 3.0)  # sampled hotter than the trainer's temperature 1.0
    _, masked = run_update(tiny_random_model, tmp_path, "algo.rollout_correction=geometric_mask",
                           "algo.rollout_correction_options={low: 0.995, high: 1.005}", rollout=off)
    assert masked["mismatch/kl"] > 1e-3 and masked["mismatch/masked_sequence_share"] > 0
    _, plain = run_update(tiny_random_model, tmp_path, "algo.rollout_correction=none", rollout=off)
    assert plain["mismatch/masked_sequence_share"] == 0.0 and plain["mismatch/kl"] == pytest.approx(masked["mismatch/kl"])
    with pytest.raises(ConfigError, match="not auto"):
        small_config(tiny_random_model, tmp_path, "algo.rollout_correction_options={cap: 3.0}")
    with pytest.raises(ConfigError, match="did you mean 'token_tis'"):
        small_config(tiny_random_model, tmp_path, "algo.rollout_correction=token_ts")
