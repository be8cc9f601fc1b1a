"""Settings of `thinkrl tiny`: how the embedded default model is made and checked."""

from __future__ import annotations

from pydantic import Field, model_validator

from thinkrl.config import Config


class TinyConfig(Config):
    """The defaults build the `thinkrl/tiny` checkpoint every command uses when none is named."""

    seed: int = Field(0, ge=0, description="seed of the weights and the pretraining corpus (thinkrl/tiny@SEED)")
    task: str = Field("chain", description="synthetic task the corpus is made of (see thinkrl.data.tasks)")
    steps: int = Field(1000, ge=1, description="pretraining steps before the first gate check")
    batch_size: int = Field(64, ge=1, description="texts per pretraining step")
    lr: float = Field(5e-3, gt=0, description="peak learning rate (linear warmup, cosine decay over all steps)")
    warmup_steps: int = Field(100, ge=0, description="linear warmup steps")
    hidden_size: int = Field(96, ge=8, description="model width")
    num_layers: int = Field(4, ge=1, description="transformer layers")
    num_heads: int = Field(4, ge=1, description="attention heads (must divide hidden_size)")
    intermediate_size: int = Field(256, ge=8, description="MLP width")
    direct_share: float = Field(0.6, ge=0, le=1, description="share of corpus completions that answer at once "
                                "(no scratchpad) once the skill phase is over: sets how often the base thinks")
    noisy_share: float = Field(0.05, ge=0, le=1, description="share of corpus scratchpads with a slip in one step")
    skill_phase: float = Field(0.6, ge=0, le=1, description="share of the steps spent first on a scratchpad-heavy "
                               "corpus, so the arithmetic is learnt before the base mix sets the habit")
    skill_direct_share: float = Field(0.15, ge=0, le=1, description="direct-answer share of the corpus during the skill phase")
    direct_correct: float = Field(0.2, ge=0, le=1, description="how often a direct answer in the corpus is right")
    gate_problems: int = Field(200, ge=10, description="held-out problems (seed 1234) the gate is measured on")
    gate_samples: int = Field(2, ge=1, description="samples per problem for the sampled accuracy and think rate")
    gate_temperature: float = Field(1.0, gt=0, description="temperature of the sampled gate measurement")
    min_forced_accuracy: float = Field(0.8, ge=0, le=1, description="gate: forced-scratchpad accuracy must reach this")
    max_greedy_accuracy: float = Field(0.4, ge=0, le=1, description="gate: greedy (direct) accuracy must stay at or below this")
    extra_rounds: int = Field(3, ge=0, description="extra training rounds while the gate fails (bounded)")
    extra_steps: int = Field(250, ge=1, description="steps per extra round")
    output_dir: str | None = Field(None, description="build here instead of the cache (~/.cache/thinkrl or $THINKRL_CACHE)")
    force: bool = Field(False, description="rebuild even if a finished checkpoint is already there")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TinyConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        if max(self.direct_share, self.skill_direct_share) + self.noisy_share > 1:
            raise ValueError("direct_share (and skill_direct_share) + noisy_share must be at most 1 "
                             "(the rest are clean scratchpads)")
        return self
