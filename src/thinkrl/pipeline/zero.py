"""R1-Zero: pure RL from a base model. GRPO with the R1-Zero template and only rule
rewards (accuracy + format), no SFT. RECIPE.md's settings where they fit: rollout
temperature 1.0, a group of 16; the KL term is off by default (beta=0, no reference
model, as Dr. GRPO/DAPO found it unnecessary; the paper used 0.001 — set algo.beta)."""

from __future__ import annotations

from pydantic import Field

from thinkrl.data.config import ZeroDataConfig
from thinkrl.train.config import GRPOConfig, RolloutConfig, RunConfig
from thinkrl.train.grpo import GRPOResult, train_grpo


class ZeroConfig(GRPOConfig):
    data: ZeroDataConfig = Field(ZeroDataConfig(), description="training prompts, rendered with the R1-Zero template")
    rollout: RolloutConfig = RolloutConfig(group_size=16, temperature=1.0)
    run: RunConfig = RunConfig(output_dir="runs/zero")


def run_zero(cfg: ZeroConfig) -> GRPOResult:
    return train_grpo(cfg)

