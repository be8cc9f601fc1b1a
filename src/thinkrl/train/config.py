"""The GRPO command's config: one section per concern, each field with one meaning.

Batch sizes are stated once, in samples: `rollout.prompts_per_step` prompts x
`rollout.group_size` completions make the rollout batch; at most `optim.micro_batch_size`
samples and `optim.max_tokens_per_microbatch` tokens go through one forward/backward,
packed without padding; every rollout batch gets `algo.mu` passes, each split into
`optim.updates_per_pass` optimiser steps.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from thinkrl.algos import ADVANTAGES, AGGREGATIONS, CORRECTIONS, LOSSES
from thinkrl.config import Config
from thinkrl.data.config import TrainDataConfig
from thinkrl.rewards import RewardTerm, r1_zero_spec
from thinkrl.rollout.engines import EngineConfig


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


class RolloutConfig(EngineConfig):
    prompts_per_step: int = Field(16, ge=1, description="prompts sampled per RL step")
    group_size: int = Field(8, ge=2, description="completions per prompt (G); GRPO needs at least 2")
    max_new_tokens: int = Field(64, ge=1, description="completion length cap; longer ones count as truncated")
    temperature: float = Field(1.0, gt=0, description="rollout temperature (paper: 1.0)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling for rollouts")
    max_staleness: int = Field(0, ge=0, description="asynchronous rollouts: a sampler process generates step s + k "
                               "while the trainer trains step s, so samples are k updates old (their log-probs "
                               "correct the update); 0: generate, then train (synchronous)")
    sampler_threads: int = Field(1, ge=1, description="torch threads of the sampler process (max_staleness > 0)")
    reward_workers: int = Field(2, ge=0, description="worker processes for rewards that parse untrusted output "
                                "(math, code), each call time-bounded; cheap checks run inline; 0: all in-process")


class AlgoConfig(Config):
    """The RL algorithm, by name: an advantage estimator, a policy loss and an aggregation from
    the registries in `thinkrl.algos` (`thinkrl grpo --help` lists them), each with its options
    checked against the function's signature when the config is read."""

    beta: float = Field(0.0, ge=0, description="KL coefficient to the reference (0: no reference model is loaded)")
    advantage: str = Field("grpo", description="advantage estimator (algos/advantages.py): grpo, rloo, reinforce_pp, "
                           "reinforce_pp_baseline, pass_at_k, or one you register")
    scale: Literal["std", "none"] | None = Field(None, description="grpo's advantage scaling: std (GRPO) or none "
                                                 "(Dr. GRPO); null: grpo's default, std")
    level: Literal["group", "batch"] | None = Field(None, description="grpo's std taken per group or over the batch; "
                                                    "null: group")
    advantage_options: dict[str, Any] = Field({}, description="options of the estimator, e.g. {k: 8} for pass_at_k")
    loss: str = Field("ppo_clip", description="policy loss (algos/losses.py): ppo_clip, dual_clip, gspo, cispo, or "
                      "one you register")
    eps_low: float | None = Field(None, ge=0, description="the loss's lower clip range (ratio >= 1 - eps_low); "
                                  "null: the loss's default (ppo_clip 0.2, gspo 3e-4, cispo 1.0)")
    eps_high: float | None = Field(None, ge=0, description="the loss's upper clip range; > eps_low is DAPO's "
                                   "clip-higher; null: the loss's default (ppo_clip 0.2, gspo 4e-4, cispo 0.28)")
    loss_options: dict[str, Any] = Field({}, description="other options of the loss, e.g. {clip_c: 3.0} for dual_clip")
    mu: int = Field(1, ge=1, description="optimisation passes per rollout batch (with one optimiser step per batch the "
                    "ratio is 1: no old-logprob forward)")
    aggregation: str = Field("sequence", description="loss aggregation (algos/aggregation.py): sequence (GRPO), "
                             "token (DAPO), dr_grpo (constant length)")
    entropy_coef: float = Field(0.0, ge=0, description="entropy bonus: the loss gets - entropy_coef x the policy's "
                                "entropy per token (with entropy_target: the starting coefficient)")
    entropy_target: float | None = Field(None, gt=0, description="adapt entropy_coef each step to keep the mean "
                                         "token entropy (nats) near this: up by entropy_coef_step while below, down "
                                         "while above, within [0, entropy_coef_max]; null: a fixed coefficient")
    entropy_coef_step: float = Field(5e-4, gt=0, description="how far the adaptive entropy coefficient moves a step")
    entropy_coef_max: float = Field(0.02, gt=0, description="the adaptive entropy coefficient's ceiling")
    entropy_floor: float = Field(0.02, ge=0, description="warn when the mean token entropy stays below this (nats) "
                                 "for 3 steps: the policy has stopped exploring (0: never)")
    top_entropy: float = Field(1.0, gt=0, le=1, description="train only on this share of completion tokens, those "
                               "of highest entropy (the 80/20 'forking tokens' rule: 0.2); 1: every token")
    dynamic_sampling: bool = Field(False, description="drop groups whose rewards all agree and refill (DAPO)")
    max_refill_rounds: int = Field(3, ge=0, description="extra rollout rounds dynamic sampling may spend per step")
    curriculum: Literal["none", "pass_rate"] = Field("none", description="pass_rate: keep every prompt's pass rate "
                                                     "across steps (saved in checkpoints) and sample prompts that "
                                                     "were always or never solved less often")
    curriculum_reward: str | None = Field(None, description="the reward term whose group mean is a prompt's pass "
                                          "rate (null: the first term of `rewards`)")
    curriculum_weight: float = Field(0.1, ge=0, le=1, description="sampling weight of a prompt last seen always or "
                                     "never solved, against 1 for the others (0: never again)")
    control: Literal["none", "shuffle"] = Field("none", description="shuffle: permute rewards within each group (a control that must not learn)")
    rollout_correction: str = Field("auto", description="train/inference mismatch correction (algos/correction.py): "
                                    "none, token_tis, sequence_mask, geometric_mask; auto: none when the trainer's "
                                    "own model samples (transformers engine), token_tis for any other engine")
    rollout_correction_options: dict[str, Any] = Field({}, description="options of the correction, e.g. {cap: 2.0} "
                                                       "for token_tis, {low: 0.99, high: 1.01} for geometric_mask")

    @field_validator("rollout_correction")
    @classmethod
    def _known_correction(cls, name: str) -> str:
        return name if name == "auto" else _known(CORRECTIONS, name)

    @field_validator("rollout_correction_options")
    @classmethod
    def _correction_options(cls, options: dict, info: ValidationInfo) -> dict:
        name = info.data.get("rollout_correction")
        if name == "auto" and options:
            raise ValueError("name the correction these options are for (algo.rollout_correction), not auto")
        if name not in (None, "auto"):
            CORRECTIONS.check_options(name, options)
        return options

    @field_validator("advantage")
    @classmethod
    def _known_advantage(cls, name: str) -> str:
        return _known(ADVANTAGES, name)

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, name: str) -> str:
        return _known(LOSSES, name)

    @field_validator("aggregation")
    @classmethod
    def _known_aggregation(cls, name: str) -> str:
        return _known(AGGREGATIONS, name)

    @field_validator("scale", "level")
    @classmethod
    def _grpo_only(cls, value, info: ValidationInfo):
        if value is not None and info.data.get("advantage", "grpo") != "grpo":
            raise ValueError(f"is an option of the grpo estimator, not of {info.data['advantage']!r} "
                             f"(its options go in algo.advantage_options)")
        return value

    @field_validator("advantage_options", "loss_options")
    @classmethod
    def _options_fit(cls, options: dict, info: ValidationInfo) -> dict:
        registry, name_field, shorthands = _OPTION_FIELDS[info.field_name]
        if name_field in info.data:
            shorthand = {k: info.data.get(k) for k in shorthands}
            registry.check_options(info.data[name_field], _merged(options, shorthand, info.field_name))
        return options

    def advantage_call_options(self) -> dict[str, Any]:
        """The estimator's options, the grpo shorthands (scale, level) included."""
        return self._call_options("advantage_options")

    def loss_call_options(self) -> dict[str, Any]:
        """The loss's options, the clip shorthands (eps_low, eps_high) included."""
        return self._call_options("loss_options")

    def _call_options(self, field: str) -> dict[str, Any]:
        shorthand = {k: getattr(self, k) for k in _OPTION_FIELDS[field][2]}
        return _merged(getattr(self, field), shorthand, field)


# options field -> (its registry, the field naming the function, the algo fields that are shorthands for options)
_OPTION_FIELDS = {"advantage_options": (ADVANTAGES, "advantage", ("scale", "level")),
                  "loss_options": (LOSSES, "loss", ("eps_low", "eps_high"))}


def _known(registry, name: str) -> str:
    try:
        registry.get(name)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    return name


def _merged(options: dict, shorthand: dict, field: str) -> dict:
    out = dict(options)
    for key, value in shorthand.items():
        if value is None:
            continue
        if key in out and out[key] != value:
            raise ValueError(f"algo.{key}={value!r} and algo.{field}.{key}={out[key]!r} disagree: set one")
        out[key] = value
    return out


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
    imports: list[str] = Field([], description="Python modules imported first, so the advantage estimators, losses, "
                               "aggregations and rewards they register can be named below (e.g. my_project.algos)")
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

    @field_validator("imports")
    @classmethod
    def _import_modules(cls, modules: list[str]) -> list[str]:
        import importlib

        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as err:
                raise ValueError(f"cannot import {module!r} ({err}); is it on PYTHONPATH or installed?") from None
        return modules

    @model_validator(mode="after")
    def _batches_divide(self) -> GRPOConfig:
        samples = self.rollout.prompts_per_step * self.rollout.group_size
        if samples % self.optim.updates_per_pass:
            raise ValueError(
                f"optim.updates_per_pass={self.optim.updates_per_pass} must divide the rollout batch "
                f"(rollout.prompts_per_step x rollout.group_size = {samples})"
            )
        return self

    @model_validator(mode="after")
    def _algorithms_accept_this_run(self) -> GRPOConfig:
        """Run the chosen estimator and loss once on a dummy batch of this run's shape, so an
        option they reject (pass_at_k's k above the group size, a negative clip range) fails
        now, with their own message, not at the first step."""
        import torch

        G = self.rollout.group_size
        rows = 2 * G
        for field, run in (
            ("algo.advantage", lambda: ADVANTAGES.call(self.algo.advantage, self.algo.advantage_call_options(),
                                                       rewards=torch.arange(rows, dtype=torch.float32) % 2,
                                                       group_size=G, lengths=torch.ones(rows))),
            ("algo.loss", lambda: LOSSES.call(self.algo.loss, self.algo.loss_call_options(),
                                              logp=torch.full((rows, 2), -1.0), old_logp=torch.full((rows, 2), -1.1),
                                              advantages=torch.ones(rows), mask=torch.ones(rows, 2))),
        ):
            try:
                run()
            except (ValueError, TypeError) as err:
                raise ValueError(f"{field}={getattr(self.algo, field.split('.')[1])!r}: {err}") from None
        return self

    @model_validator(mode="after")
    def _curriculum_reward_exists(self) -> GRPOConfig:
        name = self.algo.curriculum_reward
        names = [t.name for t in self.rewards] + [t.name for terms in self.rewards_by_kind.values() for t in terms]
        if self.algo.curriculum != "none" and name is not None and name not in names:
            raise ValueError(f"algo.curriculum_reward={name!r} is not a reward term of this run "
                             f"(rewards: {', '.join(dict.fromkeys(names))})")
        return self

    def rollout_correction(self) -> str:
        """The correction this run applies: auto is none when the trainer's own model samples
        (nothing to correct but float rounding), token_tis for vLLM, an endpoint or stale
        asynchronous samples."""
        if self.algo.rollout_correction != "auto":
            return self.algo.rollout_correction
        on_policy = self.rollout.engine == "transformers" and not self.rollout.max_staleness
        return "none" if on_policy else "token_tis"

    def pass_reward(self) -> str:
        """The reward term a prompt's pass rate is read from (the curriculum's)."""
        return self.algo.curriculum_reward or (self.rewards[0].name if self.rewards else "")
