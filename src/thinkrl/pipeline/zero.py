"""R1-Zero: pure RL from a base model. GRPO with the R1-Zero template and only rule
rewards (accuracy + format), no SFT. docs/recipe.md's settings where they fit: rollout
temperature 1.0, a group of 16; the KL term is off by default (beta=0, no reference
model, as Dr. GRPO/DAPO found it unnecessary; the paper used 0.001 — set algo.beta)."""

from __future__ import annotations

from pydantic import Field

from thinkrl.data.config import ZeroDataConfig
from thinkrl.train.config import GRPOConfig, RolloutConfig, RunConfig
from thinkrl.train.grpo import GRPOResult, train_grpo


class ZeroRolloutConfig(RolloutConfig):
    """R1-Zero's rollouts: the paper's group of 16 at temperature 1.0."""

    group_size: int = Field(16, ge=2, description="completions per prompt (G; paper: 16); GRPO needs at least 2")
    temperature: float = Field(1.0, gt=0, description="rollout temperature (paper: 1.0)")


class ZeroRunConfig(RunConfig):
    output_dir: str = Field("runs/zero", description="run folder: checkpoints, metrics.jsonl, samples, plots")


class ZeroConfig(GRPOConfig):
    data: ZeroDataConfig = Field(ZeroDataConfig(), description="training prompts, rendered with the R1-Zero template")
    rollout: ZeroRolloutConfig = ZeroRolloutConfig()
    run: ZeroRunConfig = ZeroRunConfig()


def run_zero(cfg: ZeroConfig) -> GRPOResult:
    return train_grpo(cfg)

