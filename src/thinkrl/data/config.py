"""`DataConfig`: the section every command uses to name its prompts and how to render them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from thinkrl.config import Config
from thinkrl.data.context import LongPromptPolicy

PresetName = Literal["auto", "gsm8k", "math500", "aime", "amc", "humaneval", "none"]
TemplateName = Literal["r1_zero", "r1_zero_short", "chat", "plain"]


class DataConfig(Config):
    """Where the prompts come from, which columns hold what, and the prompt template."""

    path: str = Field(
        "task:chain",
        description="prompt source: a .jsonl/.json/.parquet file, a folder (save_to_disk or data files), "
        "a Hugging Face dataset id, or task:NAME for a synthetic task (task:chain, task:countdown)",
    )
    preset: PresetName = Field(
        "auto",
        description="column layout of a known benchmark; auto detects it from the columns and the path, "
        "none reads generic columns (prompt/question/problem, answer, id, tests, kind)",
    )
    split: str = Field("test", description="split to read from a save_to_disk folder, a folder of split files or a "
                       "hub dataset (evaluation: test; training commands: train); a missing split is an error "
                       "naming those there are; a single file or task: source has no splits")
    subset: str | None = Field(None, description="configuration name of a hub dataset (e.g. 'main' for openai/gsm8k)")
    question_field: str | None = Field(None, description="column holding the question (overrides the preset)")
    answer_field: str | None = Field(None, description="column holding the reference answer (overrides the preset)")
    id_field: str | None = Field(None, description="column holding a row id (overrides the preset; default: row number)")
    tests_field: str | None = Field(None, description="column holding test code for code prompts (overrides the preset)")
    kind: str | None = Field(
        None, description="grading kind for every row: math, code, general or a task name (overrides the preset)"
    )
    template: TemplateName = Field(
        "r1_zero_short",
        description="prompt template: r1_zero (the paper's), r1_zero_short (its last line, what the tiny model "
        "knows), chat (the tokenizer's chat template), plain (the question as is)",
    )
    system_prompt: str | None = Field(None, description="system message (chat template) or text put before the prompt")
    limit: int | None = Field(None, ge=1, description="keep at most this many examples (after shuffling)")
    shuffle: bool = Field(False, description="shuffle the examples before applying limit")
    seed: int = Field(0, description="seed of the shuffle")
    on_bad_row: Literal["error", "skip"] = Field(
        "error", description="a malformed row stops loading (error) or is skipped, counted and logged (skip)"
    )
    on_long_prompt: LongPromptPolicy = Field(
        "skip", description="a rendered prompt whose tokens plus max_new_tokens exceed the model's positions: "
        "skip it (counted and logged), truncate it (keep its end: the start of the prompt goes, the question's end "
        "and the template's generation prompt stay), or error (stop, naming how many and the longest)"
    )
    task_size: int = Field(256, ge=1, description="number of problems drawn from a task: source")
    task_seed: int = Field(
        1234, description="seed of a task: source; 1234 draws the held-out split, training uses other seeds"
    )


class TrainDataConfig(DataConfig):
    """The prompt section of training commands: datasets default to their train split, task
    prompts to a training seed, so a run never trains on a test split without being told to.
    (A section given in YAML or with --set is built from its class defaults, so a default
    *instance* such as DataConfig(task_seed=0) would silently fall back to the held-out split.)"""

    split: str = Field("train", description="split to read from a save_to_disk folder, a folder of split files or "
                       "a hub dataset (training: train, never the test split unless asked); a missing split is an "
                       "error naming those there are; a single file or task: source has no splits")
    task_seed: int = Field(0, description="seed of a task: source; training uses seeds other than 1234 "
                           "(the held-out split the evaluations use)")
    task_size: int = Field(4096, ge=1, description="number of problems drawn from a task: source")


class ZeroDataConfig(TrainDataConfig):
    """R1-Zero's prompts: the paper's template."""

    template: TemplateName = Field("r1_zero", description="prompt template (R1-Zero: the paper's)")
