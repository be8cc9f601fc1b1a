"""A reward spec: which rewards to sum, with what weight and options (one YAML list)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from thinkrl.config import Config


class RewardTerm(Config):
    """One weighted reward in a spec, e.g. `{name: accuracy, weight: 1.0, options: {partial: true}}`."""

    name: str = Field("accuracy", description="registered reward name (accuracy, math_accuracy, code_accuracy, format_r1, format_r1_zero, language_consistency, overlong, cosine_length, ...)")
    weight: float = Field(1.0, description="weight of this reward in the total")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword options passed to the reward (e.g. partial, answer_mode, language, max_len: in tokens for overlong and cosine_length)")


def r1_zero_spec(format_weight: float = 0.5) -> list[RewardTerm]:
    """R1-Zero's rule rewards: accuracy plus a smaller format bonus."""
    return [RewardTerm(name="accuracy", weight=1.0), RewardTerm(name="format_r1_zero", weight=format_weight)]
