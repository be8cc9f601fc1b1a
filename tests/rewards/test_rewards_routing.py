"""Rewards routed by example kind (RL for all scenarios): each kind scored by its own spec."""

from __future__ import annotations

import json

from thinkrl.config import load_config
from thinkrl.data.example import Example
from thinkrl.rewards import RewardResult, RewardTerm, register
from thinkrl.rewards.routing import NOT_APPLICABLE, score_routed
from thinkrl.train.config import GRPOConfig
from thinkrl.train.grpo import train_grpo


@register("test_polite", isolate=False)
def polite(completion: str, example: Example, **options) -> RewardResult:
    return RewardResult(1.0, "polite") if "please" in completion else RewardResult(0.0, "rude")


def test_each_kind_gets_its_own_spec_and_others_are_not_applicable():
    examples = [Example(prompt="2+2?", answer="4", kind="math"), Example(prompt="hi", answer=None, kind="general")]
    completions = ["<think>2+2=4</think><answer>4</answer>", "please help"]
    scores = score_routed(completions, examples, [RewardTerm(name="accuracy")],
                          {"general": [RewardTerm(name="test_polite", weight=2.0)]}, workers=0)
    assert scores.total == [1.0, 2.0]
    assert scores.by_name["accuracy"] == [1.0, 0.0]
    assert scores.reasons["accuracy"][1] == NOT_APPLICABLE
    assert scores.reasons["test_polite"] == [NOT_APPLICABLE, "polite"]
    assert scores.errors == 0


def test_grpo_over_a_mixed_prompt_set_reports_each_kind(tiny_random_model, tmp_path):
    cfg = load_config(GRPOConfig, None, [
        f"model.name={tiny_random_model}", f"run.output_dir={tmp_path}", "run.steps=2", "run.plot=false",
        "data.path=task:chain", "data.task_size=32", "data.task_seed=5",
        "rollout.prompts_per_step=8", "rollout.group_size=2", "rollout.max_new_tokens=6", "rollout.reward_workers=0",
    ])
    cfg = cfg.model_copy(update={
        "data_mix": [cfg.data.model_copy(update={"path": "task:countdown"})],
        "rewards_by_kind": {"countdown": [RewardTerm(name="test_polite")]},
    })
    train_grpo(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    mixed = [row for row in rows if "kind/countdown/share" in row]
    assert mixed, "no step saw both kinds"
    for row in mixed:
        assert abs(row["kind/chain/share"] + row["kind/countdown/share"] - 1.0) < 1e-9
        assert "reasons/test_polite/rude" in row and f"reasons/test_polite/{NOT_APPLICABLE}" not in row
