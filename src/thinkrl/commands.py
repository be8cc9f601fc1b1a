"""The table of thinkrl's commands: each names its config model and its entry point.

The CLI turns every row into a subcommand and the pipeline runs rows as stages, so a stage
in `r1.yaml` is exactly the command a user would type. Entries are 'module:attribute'
strings, imported lazily, so `thinkrl --help` stays fast and a missing optional extra
breaks only its own command.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thinkrl.config import Config


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    config: str
    run: str

    def config_model(self) -> type[Config]:
        return _import(self.config)

    def runner(self) -> Callable[[Any], Any]:
        return _import(self.run)


COMMANDS = [
    Command("tiny", "Build (once) and cache the tiny default model and tokenizer.",
            "thinkrl.tiny.config:TinyConfig", "thinkrl.tiny.build:run_tiny"),
    Command("eval", "Evaluate a checkpoint on a prompt set: pass@1 over k, cons@k, format rate, length.",
            "thinkrl.eval.config:EvalConfig", "thinkrl.eval.run:run_eval"),
    Command("grpo", "GRPO training on any model and prompt set (generate -> score -> advantages -> update).",
            "thinkrl.train.config:GRPOConfig", "thinkrl.train.grpo:train_grpo"),
    Command("zero", "R1-Zero: GRPO from a base model with the R1-Zero template and rule rewards only.",
            "thinkrl.pipeline.zero:ZeroConfig", "thinkrl.pipeline.zero:run_zero"),
    Command("sft", "Supervised fine-tuning on prompt/response or chat rows (loss on the responses only).",
            "thinkrl.train.sft_config:SFTConfig", "thinkrl.train.sft:train_sft"),
    Command("sample", "Sample N answers per prompt and keep the good ones (rejection sampling) as an SFT dataset.",
            "thinkrl.pipeline.sample:SampleConfig", "thinkrl.pipeline.sample:run_sample"),
    Command("distill", "Distillation: sample a teacher, rejection-filter, SFT a student on what is kept.",
            "thinkrl.pipeline.distill:DistillConfig", "thinkrl.pipeline.distill:run_distill"),
    Command("pipeline", "Run the stages of a pipeline YAML (R1-Zero, the R1 stages, distillation); reruns skip finished stages.",
            "thinkrl.pipeline.runner:PipelineConfig", "thinkrl.pipeline.runner:run_pipeline"),
    Command("serve", "Serve a checkpoint over an OpenAI-compatible HTTP API (completions and chat).",
            "thinkrl.rollout.serve_config:ServeConfig", "thinkrl.rollout.server:run_serve"),
    Command("vllm-serve", "Serve rollouts from vLLM on other GPUs or nodes (rollout.vllm.mode=server).",
            "thinkrl.rollout.vllm_server:VLLMServeConfig", "thinkrl.rollout.vllm_server:run_vllm_serve"),
    Command("demo", "The demo: R1-Zero on the tiny default, evaluated before and after, with plots.",
            "thinkrl.pipeline.demo:DemoConfig", "thinkrl.pipeline.demo:run_demo"),
    Command("reward", "Score a jsonl of completions with a reward spec; write rewards and reasons.",
            "thinkrl.rewards.command:RewardCommandConfig", "thinkrl.rewards.command:run_reward"),
]


def get_command(name: str) -> Command:
    for cmd in COMMANDS:
        if cmd.name == name:
            return cmd
    from thinkrl.errors import ConfigError

    raise ConfigError(f"unknown command '{name}'; choose from {', '.join(c.name for c in COMMANDS)}")


def _import(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
