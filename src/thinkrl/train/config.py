"""The GRPO command's config: one section per concern, each field with one meaning.

Batch sizes are stated once, in samples: `rollout.prompts_per_step` prompts x
`rollout.group_size` completions make the rollout batch; at most `optim.micro_batch_size`
samples and `optim.max_tokens_per_microbatch` tokens go through one forward/backward,
packed without padding; every rollout batch gets `algo.mu` passes, each split into
`optim.updates_per_pass` optimiser steps.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from thinkrl.config import Config
from thinkrl.data.config import TrainDataConfig
from thinkrl.rewards import RewardTerm, r1_zero_spec
from thinkrl.rollout.vllm_engine import VLLMConfig


class LoraConfig(Config):
    enabled: bool = Field(False, description="train a LoRA adapter (peft) instead of all weights")
    r: int = Field(16, description="LoRA rank")
    alpha: int = Field(32, description="LoRA alpha")
    dropout: float = Field(0.0, description="LoRA dropout")
    target_modules: list[str] | str = Field("all-linear", description="modules to adapt (peft syntax)")


class ModelConfig(Config):
    name: str = Field("thinkrl/tiny", description="local checkpoint folder or hub id (thinkrl/tiny: the embedded default)")
    tokenizer: str | None = Field(None, description="tokenizer folder or hub id (null: the model's own)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="compute dtype; bfloat16/float16 "
                                                             "train in mixed precision (fp32 trained weights and AdamW "
                                                             "state, half-precision forward/backward); the frozen "
                                                             "reference and a LoRA base are held in it")
    gradient_checkpointing: bool = Field(False, description="trade compute for activation memory")
    lora: LoraConfig = LoraConfig()


class RolloutConfig(Config):
    engine: Literal["transformers", "vllm"] = Field("transformers", description="rollout engine: transformers "
                                                    "generate (CPU/GPU, default) or vLLM (GPU, pip install 'thinkrl[vllm]')")
    vllm: VLLMConfig = Field(VLLMConfig(), description="vLLM engine settings (rollout.engine=vllm)")
    prompts_per_step: int = Field(16, ge=1, description="prompts sampled per RL step")
    group_size: int = Field(8, ge=2, description="completions per prompt (G); GRPO needs at least 2")
    max_new_tokens: int = Field(64, ge=1, description="completion length cap; longer ones count as truncated")
    temperature: float = Field(1.0, gt=0, description="rollout temperature (paper: 1.0)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling for rollouts")
    batch_size: int = Field(256, ge=1, description="sequences per generate call")
    reward_workers: int = Field(2, ge=0, description="worker processes for rewards that parse untrusted output "
                                "(math, code), each call time-bounded; cheap checks run inline; 0: all in-process")


class AlgoConfig(Config):
    beta: float = Field(0.0, ge=0, description="KL coefficient to the reference (0: no reference model is loaded)")
    eps_low: float = Field(0.2, ge=0, description="lower clip range (ratio >= 1 - eps_low)")
    eps_high: float = Field(0.2, ge=0, description="upper clip range; > eps_low is DAPO's clip-higher")
    mu: int = Field(1, ge=1, description="optimisation passes per rollout batch (with one optimiser step per batch the ratio is 1: no old-logprob forward)")
    scale: Literal["std", "none"] = Field("std", description="advantage scaling: std (GRPO) or none (Dr. GRPO)")
    level: Literal["group", "batch"] = Field("group", description="std taken per group or over the batch")
    aggregation: Literal["sequence", "token", "dr_grpo"] = Field("sequence", description="loss aggregation: GRPO, DAPO token-level, or Dr. GRPO constant")
    dynamic_sampling: bool = Field(False, description="drop groups whose rewards all agree and refill (DAPO)")
    max_refill_rounds: int = Field(3, ge=0, description="extra rollout rounds dynamic sampling may spend per step")
    control: Literal["none", "shuffle"] = Field("none", description="shuffle: permute rewards within each group (a control that must not learn)")


class AdamWConfig(Config):
    """AdamW and its schedule: what `build_optimizer` reads (GRPO and SFT alike)."""

    lr: float = Field(3e-4, gt=0, description="peak learning rate (paper, 7B+: 3e-6; tiny default: 3e-4)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up, in optimiser steps")
    schedule: Literal["constant", "linear", "cosine"] = Field("constant", description="lr after warm-up")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping (global norm)")


class OptimConfig(AdamWConfig):
    micro_batch_size: int = Field(32, ge=1, description="at most this many samples per forward/backward (gradient "
                                  "accumulation below that)")
    max_tokens_per_microbatch: int = Field(16384, ge=1, description="at most this many tokens (prompt + completion, "
                                           "packed without padding) per forward/backward; a longer sample goes alone")
    logprob_chunk_tokens: int | None = Field(None, ge=0, description="completion tokens per chunk through the LM "
                                             "head when computing log-probs (memory holds one chunk's logits, never "
                                             "[tokens, vocabulary]); null: 32 MiB of logits per chunk on CPU, 256 MiB "
                                             "on a GPU (55 and 442 tokens at a 151k vocabulary); 0: padded forward "
                                             "with full logits (the reference path)")
    updates_per_pass: int = Field(1, ge=1, description="optimiser steps per pass over the rollout batch")


class TrainRunConfig(Config):
    """What every training run folder shares (GRPO's and SFT's `run` sections)."""

    keep_checkpoints: int = Field(2, ge=1, description="checkpoints kept on disk")
    trackers: list[Literal["tensorboard", "wandb"]] = Field([], description="extra metric trackers")
    torch_threads: int = Field(0, ge=0, description="torch CPU threads per process (0: torch's default)")
    plot: bool = Field(True, description="write PNG plots of the metrics at the end")
    overwrite: bool = Field(False, description="replace a run already in the run folder (without it, and without "
                            "--resume, a command refuses a folder that holds a run)")
    accept_config_change: bool = Field(False, description="--resume even though the config differs from the run's "
                                       "config.yaml (run length, logging and checkpoint settings may always change)")


class RunConfig(TrainRunConfig):
    output_dir: str = Field("runs/grpo", description="run folder: checkpoints, metrics.jsonl, samples, plots")
    steps: int = Field(60, ge=1, description="RL steps (one rollout batch each)")
    seed: int = Field(0, description="seed for data order, sampling and init")
    save_every: int = Field(20, ge=0, description="checkpoint every N steps (0: only at the end)")
    sample_every: int = Field(10, ge=1, description="write sample completions every N steps")


class GRPOConfig(Config):
    model: ModelConfig = ModelConfig()
    data: TrainDataConfig = TrainDataConfig()
    rollout: RolloutConfig = RolloutConfig()
    algo: AlgoConfig = AlgoConfig()
    optim: OptimConfig = OptimConfig()
    data_mix: list[TrainDataConfig] = Field([], description="more prompt sets mixed into data (e.g. general prompts "
                                       "for RL in all scenarios); each example keeps its own kind and template")
    rewards: list[RewardTerm] = Field(default_factory=r1_zero_spec, description="reward terms {name, weight, "
                                     "options}, summed with weights; the length rewards (overlong, cosine_length) count "
                                     "max_len and cache in tokens (options.unit: chars counts characters)")
    rewards_by_kind: dict[str, list[RewardTerm]] = Field({}, description="reward spec per example kind (math, code, "
                                                         "general, a task name); kinds not listed use rewards")
    run: RunConfig = RunConfig()
    resume: bool = Field(False, description="continue from the last checkpoint in run.output_dir")

    @model_validator(mode="after")
    def _batches_divide(self) -> GRPOConfig:
        samples = self.rollout.prompts_per_step * self.rollout.group_size
        if samples % self.optim.updates_per_pass:
            raise ValueError(
                f"optim.updates_per_pass={self.optim.updates_per_pass} must divide the rollout batch "
                f"(rollout.prompts_per_step x rollout.group_size = {samples})"
            )
        return self
