"""The demo: reasoning emerging from rewards alone, on a laptop CPU.

R1-Zero GRPO on the tiny default model over a synthetic task, evaluated on held-out
problems before and after; a before/after table, a run folder with metrics.jsonl,
sample completions over training, and PNG plots. `control=shuffle` runs the same thing
with rewards shuffled inside each group, to show the gain is the reward's doing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator
from rich.console import Console
from rich.table import Table

from thinkrl.algos.presets import preset
from thinkrl.config import Config, to_yaml
from thinkrl.data.config import DataConfig, TrainDataConfig
from thinkrl.data.loaders import load_examples
from thinkrl.errors import ConfigError
from thinkrl.eval.config import EvalSettings
from thinkrl.eval.evaluate import EvalMetrics, evaluate
from thinkrl.eval.report import write_results
from thinkrl.models import TINY_NAME, load_tokenizer
from thinkrl.rewards import r1_zero_spec
from thinkrl.rollout.engines import make_engine
from thinkrl.sections import OutputRunConfig, set_torch_threads
from thinkrl.train.config import AlgoConfig, GRPOConfig, ModelConfig, OptimConfig, RolloutConfig, RunConfig
from thinkrl.train.grpo import train_grpo

TEMPLATE = "r1_zero_short"  # the tiny character-level model was pretrained on the template's last line


class DemoModelConfig(Config):
    name: str = Field("thinkrl/tiny", description="base model; thinkrl/tiny (the default, built on first use) "
                      "becomes thinkrl/tiny@SEED (run.seed) so every seed also has its own base")


class DemoRunConfig(OutputRunConfig):
    output_dir: str = Field("runs/demo", description="run folder")
    seed: int = Field(0, description="RL seed (data order, sampling)")
    steps: int = Field(60, ge=1, description="GRPO steps")


class DemoConfig(Config):
    renamed: ClassVar[dict[str, str]] = {
        "model": "model.name", "output_dir": "run.output_dir", "torch_threads": "run.torch_threads",
        "seed": "run.seed", "steps": "run.steps"}

    model: DemoModelConfig = DemoModelConfig()
    task: str = Field("chain", description="synthetic task to train and evaluate on")
    prompts_per_step: int = Field(16, ge=1, description="prompts per step")
    group_size: int = Field(8, ge=2, description="completions per prompt")
    lr: float = Field(1.5e-4, gt=0, description="learning rate")
    beta: float = Field(0.001, ge=0, description="KL coefficient to the base (the paper's 0.001; 0 loads no reference)")
    temperature: float = Field(1.0, gt=0, description="rollout temperature during training")
    format_weight: float = Field(0.5, ge=0, description="weight of the format reward (accuracy has weight 1)")
    max_new_tokens: int = Field(64, ge=1, description="completion cap during training and eval")
    control: Literal["none", "shuffle"] = Field("none", description="shuffle: rewards permuted within groups (must not learn)")
    algo: str = Field("grpo", description="algorithm preset (thinkrl.algos.presets): grpo, dr_grpo, dapo, rloo, "
                      "reinforce_pp, reinforce_pp_baseline, pass_at_k, dual_clip, gspo, cispo, forking_tokens")
    updates_per_pass: int = Field(1, ge=1, description="optimiser steps per rollout batch (2: the second is "
                                  "off-policy, where the losses differ)")
    max_staleness: int = Field(0, ge=0, description="asynchronous rollouts: a sampler process generates k steps "
                               "ahead of training (0: synchronous)")
    eval_size: int = Field(128, ge=1, description="held-out problems evaluated before and after")
    eval_k: int = Field(4, ge=1, description="samples per problem for pass@1 and cons@k")
    run: DemoRunConfig = DemoRunConfig()
    full: bool = Field(False, description="run the whole R1 recipe instead (R1-Zero, the four R1 stages, distillation "
                       "into a smaller student vs RL on it) into run.output_dir/mini-r1: pipeline/recipes/mini-r1.yaml")

    @field_validator("algo")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        preset(name)  # ValueError with did-you-mean
        return name


def base_model(cfg: DemoConfig) -> str:
    return f"{TINY_NAME}@{cfg.run.seed}" if cfg.model.name == TINY_NAME else cfg.model.name


def grpo_config(cfg: DemoConfig) -> GRPOConfig:
    run = cfg.run
    return GRPOConfig(
        model=ModelConfig(name=base_model(cfg)),
        data=TrainDataConfig(path=f"task:{cfg.task}", template=TEMPLATE, task_seed=run.seed + 1, task_size=4096),
        rollout=RolloutConfig(prompts_per_step=cfg.prompts_per_step, group_size=cfg.group_size,
                              max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              max_staleness=cfg.max_staleness),
        algo=AlgoConfig(beta=cfg.beta, control=cfg.control, **preset(cfg.algo)),
        optim=OptimConfig(lr=cfg.lr, micro_batch_size=64, updates_per_pass=cfg.updates_per_pass),
        rewards=r1_zero_spec(cfg.format_weight),
        # the demo owns its folder: `make demo` again replaces its last run (run folders refuse that otherwise)
        run=RunConfig(output_dir=str(Path(run.output_dir) / "train"), steps=run.steps, seed=run.seed,
                      save_every=max(run.steps // 3, 1), sample_every=max(run.steps // 6, 1),
                      torch_threads=run.torch_threads, overwrite=True),
    )


RECIPE = Path(__file__).parent / "recipes" / "mini-r1.yaml"


def run_demo(cfg: DemoConfig) -> dict:
    if cfg.full:
        return run_full(cfg)
    set_torch_threads(cfg.run.torch_threads)  # the evaluations too, not only the training run
    console = Console()
    out = Path(cfg.run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.yaml").write_text(to_yaml(cfg))
    started = time.perf_counter()
    held_out = load_examples(DataConfig(path=f"task:{cfg.task}", task_size=cfg.eval_size))  # seed 1234: never trained on
    settings = EvalSettings(k=cfg.eval_k, max_new_tokens=cfg.max_new_tokens, batch_size=256)

    console.rule("[bold]1. the base model")
    before = _evaluate(base_model(cfg), held_out, settings, out / "eval_before")
    console.rule(f"[bold]2. R1-Zero GRPO, {cfg.run.steps} steps" + (" (control: shuffled rewards)" if cfg.control != "none" else ""))
    result = train_grpo(grpo_config(cfg))
    console.rule("[bold]3. the trained model")
    after = _evaluate(str(result.final_model_dir), held_out, settings, out / "eval_after")

    console.print(before_after_table(before, after, title=f"held-out {cfg.task}, {len(held_out)} problems"))
    summary = {"before": before.as_dict(), "after": after.as_dict(), "seconds": time.perf_counter() - started,
               "run_dir": str(result.run_dir), "plots": str(result.run_dir / "plots")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"run folder: {out}  (metrics: {result.run_dir / 'metrics.jsonl'}, plots: {result.run_dir / 'plots'})")
    console.print(f"total time {summary['seconds']:.0f} s")
    return summary


def run_full(cfg: DemoConfig) -> dict:
    """Mini R1: the packaged pipeline, run like `thinkrl pipeline` would run it."""
    from thinkrl.config import load_config
    from thinkrl.pipeline.runner import PipelineConfig, run_pipeline

    ignored = full_ignores(cfg)
    if ignored:  # the recipe sets its own models, seeds and steps: say so rather than ignore them
        raise ConfigError(f"full=true runs the packaged recipe, which takes only run.output_dir and "
                          f"run.torch_threads; {', '.join(ignored)} would be ignored. Copy {RECIPE} and edit it, "
                          f"then run `thinkrl pipeline YOUR_COPY.yaml`")
    overrides = [f"run.output_dir={Path(cfg.run.output_dir) / 'mini-r1'}", f"run.torch_threads={cfg.run.torch_threads}"]
    return run_pipeline(load_config(PipelineConfig, RECIPE, overrides))


def full_ignores(cfg: DemoConfig) -> list[str]:
    """The fields set by the user that the packaged recipe would not read (dotted names)."""
    top = sorted(cfg.model_fields_set - {"full", "model", "run"})
    nested = [f"{name}.{field}" for name in ("model", "run") if name in cfg.model_fields_set
              for field in sorted(getattr(cfg, name).model_fields_set - {"output_dir", "torch_threads"})]
    return sorted(top + nested)


def _evaluate(model_name: str, examples, settings: EvalSettings, folder: Path) -> EvalMetrics:
    tokenizer = load_tokenizer(model_name)
    result = evaluate(make_engine(settings, model_name, tokenizer=tokenizer), tokenizer, examples, settings,
                      template=TEMPLATE)
    write_results(result, folder)
    return result.metrics


def before_after_table(before: EvalMetrics, after: EvalMetrics, title: str) -> Table:
    table = Table(title=title, header_style="bold")
    for column in ("metric", "before", "after"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    k = before.k
    rows = [
        ("greedy accuracy", "greedy_accuracy", True), (f"pass@1 (k={k})", "pass_at_1", True),
        (f"cons@{k}", "cons_at_k", True), ("format rate", "format_rate", True),
        ("scratchpad use", "scratchpad_rate", True), ("response length (tokens)", "mean_response_tokens", False),
        ("truncated", "truncated_rate", True),
    ]
    for name, key, pct in rows:
        a, b = getattr(before, key), getattr(after, key)
        fmt = (lambda v: "-" if v is None else f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.1f}")
        table.add_row(name, fmt(a), fmt(b))
    return table
