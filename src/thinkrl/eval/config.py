"""The `thinkrl eval` config: which model, which prompts, and how to sample and grade.

Sampling defaults are the R1 paper's evaluation settings (temperature 0.6, top-p 0.95,
k samples per question); a greedy pass is run alongside because small models are often
judged that way and the gap between the two says how peaked the policy is.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from thinkrl.config import Config
from thinkrl.data.config import DataConfig
from thinkrl.rollout.engines import EngineConfig
from thinkrl.sections import InferenceModelConfig, OutputRunConfig


class EvalModelConfig(InferenceModelConfig):
    """The checkpoint under evaluation."""


class EvalRunConfig(OutputRunConfig):
    output_dir: str = Field("runs/eval", description="folder for metrics.json, samples.jsonl and config.yaml")


class EvalSettings(EngineConfig):
    k: int = Field(4, ge=0, description="samples per question for pass@1 and cons@k (paper: 4 to 64; 0: greedy only)")
    temperature: float = Field(0.6, ge=0, description="sampling temperature for the k samples (paper: 0.6)")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling for the k samples (paper: 0.95)")
    greedy: bool = Field(True, description="also grade one greedy answer per question (greedy accuracy)")
    max_new_tokens: int = Field(128, ge=1, description="response length cap; longer ones count as truncated")
    batch_size: int = Field(64, ge=1, description="sequences per generate call (transformers engine)")
    seed: int = Field(0, description="sampling seed (same seed, same samples)")
    stop: list[str] = Field([], description="stop strings: a response ends after the first one (kept in the text)")
    prefill: str = Field("", description="text appended to every prompt, e.g. '<think>' to force the scratchpad")
    answer_reward: str = Field("accuracy", description="reward (registry name) that decides correctness")
    format_reward: str = Field("format_r1_zero", description="reward (registry name) that decides format compliance")
    language_reward: str = Field("language_consistency", description="reward (registry name) that measures "
                                 "language consistency of the chain of thought (R1: English)")

    @model_validator(mode="after")
    def _something_to_run(self) -> EvalSettings:
        if self.k == 0 and not self.greedy:
            raise ValueError("eval.k=0 with eval.greedy=false evaluates nothing; set k >= 1 or greedy=true")
        return self


class EvalConfig(Config):
    renamed: ClassVar[dict[str, str]] = {"eval.output_dir": "run.output_dir"}

    model: EvalModelConfig = EvalModelConfig()
    data: DataConfig = DataConfig()
    eval: EvalSettings = EvalSettings()
    run: EvalRunConfig = EvalRunConfig()
