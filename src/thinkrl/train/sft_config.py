"""The SFT command's config: model, data, optimiser and run sections.

Batch sizes are counted once, in rows fed to the model: an example, or with
`data.packing` one packed sequence of several examples. `run.batch_size` rows make one
optimiser step over all processes; `run.micro_batch_size` rows go through one
forward/backward on one process (gradient accumulation covers the rest).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from thinkrl.config import Config
from thinkrl.train.config import AdamWConfig, ModelConfig, TrainRunConfig

SFTTemplate = Literal["auto", "none", "r1_zero", "r1_zero_short", "chat", "plain"]


class SFTDataConfig(Config):
    """Where the training rows come from and how they become tokens."""

    path: str = Field(
        "task:chain",
        description="rows: a .jsonl/.json/.parquet file, a folder (save_to_disk or data files), or task:NAME "
        "(a synthetic task's problems with their correct scratchpads as responses)",
    )
    extra_paths: list[str] = Field([], description="more sources read after path, same columns (e.g. general, "
                                   "non-reasoning data next to rejection-sampled traces: R1 stage 3)")
    split: str = Field("train", description="split to read from a folder holding several")
    prompt_field: str = Field("prompt", description="column holding the prompt (used verbatim unless data.template says)")
    response_field: str = Field("response", description="column holding the response the model learns to write")
    messages_field: str = Field("messages", description="column holding a chat (list of {role, content}); "
                                "rows that have it are rendered with the chat template, loss on assistant turns")
    template: SFTTemplate = Field(
        "auto",
        description="how a prompt becomes text: none (verbatim: already rendered, e.g. `thinkrl sample` output), "
        "r1_zero / r1_zero_short / chat / plain (render a raw question); auto: none for files, r1_zero_short for task:",
    )
    system_prompt: str | None = Field(None, description="system message (chat) or text put before a rendered prompt")
    max_length: int = Field(256, ge=2, description="tokens per row (at most the model's positions); longer "
                            "examples are handled as data.on_long_row says")
    on_long_row: Literal["truncate", "skip", "error"] = Field(
        "truncate", description="an example (prompt + response) longer than max_length: truncate it (keep its first "
        "max_length tokens: the prompt and the start of the response), skip it, or error (stop, naming how many "
        "and the longest); truncated and skipped rows are counted and reported"
    )
    packing: bool = Field(False, description="pack several examples into one row of max_length tokens "
                          "(no attention across examples); batch sizes then count packed rows")
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="share of rows held out for an eval loss (0: none)")
    limit: int | None = Field(None, ge=1, description="use only the first N rows")
    task_size: int = Field(512, ge=1, description="problems drawn from a task: source")
    task_seed: int = Field(0, description="seed of a task: source (1234 is the held-out split: do not train on it)")


class SFTOptimConfig(AdamWConfig):
    """AdamW for SFT: a cosine decay by default."""

    lr: float = Field(3e-4, gt=0, description="peak learning rate (tiny default: 3e-4; 7B+ models: ~1e-5)")
    schedule: Literal["constant", "linear", "cosine"] = Field("cosine", description="lr after warm-up")


class SFTRunConfig(TrainRunConfig):
    output_dir: str = Field("runs/sft", description="run folder: checkpoints, metrics.jsonl, plots, final/")
    epochs: int = Field(2, ge=1, description="passes over the training rows")
    max_steps: int = Field(0, ge=0, description="stop after this many optimiser steps (0: run.epochs decides; "
                           "more steps than the epochs hold start further epochs)")
    batch_size: int = Field(16, ge=1, description="rows per optimiser step, over all processes")
    micro_batch_size: int = Field(8, ge=1, description="rows per forward/backward on one process")
    eval_every: int = Field(0, ge=0, description="eval loss every N steps (0: only at the end; needs data.eval_fraction)")
    save_every: int = Field(50, ge=0, description="checkpoint every N steps (0: only at the end)")
    seed: int = Field(0, description="seed for the data order, packing, the eval split and init")


class SFTConfig(Config):
    model: ModelConfig = ModelConfig()
    data: SFTDataConfig = SFTDataConfig()
    optim: SFTOptimConfig = SFTOptimConfig()
    run: SFTRunConfig = SFTRunConfig()
    resume: bool = Field(False, description="continue from the last checkpoint in run.output_dir")

    @model_validator(mode="after")
    def _micro_divides_batch(self) -> SFTConfig:
        if self.run.batch_size % self.run.micro_batch_size:
            raise ValueError(
                f"run.micro_batch_size={self.run.micro_batch_size} must divide run.batch_size={self.run.batch_size}"
            )
        return self
