"""`thinkrl reward`: score a jsonl of completions with a reward spec, write rewards and reasons.

Each input row holds a completion and the example fields needed to grade it (prompt,
answer, kind, tests, entry_point, meta; renamed with `fields`). Useful on its own to check
a model's outputs, or a dataset's reference answers against its checker.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import Field
from rich.console import Console
from rich.table import Table

from thinkrl.config import Config
from thinkrl.data.example import Example
from thinkrl.data.loaders import jsonl_rows
from thinkrl.data.presets import RowError
from thinkrl.errors import ConfigError, DataError
from thinkrl.rewards.scoring import RewardScores, score_completions
from thinkrl.rewards.spec import RewardTerm, r1_zero_spec

EXAMPLE_FIELDS = ("prompt", "answer", "kind", "id", "tests", "entry_point", "meta")


class RewardCommandConfig(Config):
    input: str = Field("completions.jsonl", description="jsonl file, one completion (and its example fields) per row")
    output: str = Field("", description="output jsonl (default: <input stem>.rewards.jsonl beside the input)")
    completion_field: str = Field("completion", description="row field holding the completion text")
    fields: dict[str, str] = Field(default_factory=dict, description="example field -> row field, e.g. {answer: solution}; unnamed fields use their own name")
    kind: str = Field("math", description="example kind for rows without one (math, code, or a task name)")
    answer_marker: str = Field("", description="keep only the text after the last occurrence of this marker in the answer (e.g. '####' for GSM8K)")
    rewards: list[RewardTerm] = Field(default_factory=r1_zero_spec, description="reward terms, summed with weights; "
                                      "overlong/cosine_length count tokens: rows carry no token ids, so give them "
                                      "options.tokenizer (or meta.completion_tokens per row, or unit: chars)")
    workers: int = Field(2, ge=0, description="worker processes for isolated rewards (0: score in this process)")
    timeout_s: float = Field(5.0, gt=0, description="hard time limit per sample and reward, in seconds")
    limit: int = Field(0, ge=0, description="score only the first N rows (0: all)")


def _example(row: dict[str, Any], cfg: RewardCommandConfig, where: str) -> Example:
    unknown = set(cfg.fields) - set(EXAMPLE_FIELDS)
    if unknown:
        raise ConfigError(f"fields: unknown example field(s) {', '.join(sorted(unknown))}; valid: {', '.join(EXAMPLE_FIELDS)}")
    values = {name: row.get(cfg.fields.get(name, name)) for name in EXAMPLE_FIELDS}
    if values["prompt"] is None:
        values["prompt"] = ""
    values["kind"] = values["kind"] or cfg.kind
    answer = values["answer"]
    if answer is not None:
        answer = str(answer)
        if cfg.answer_marker and cfg.answer_marker in answer:
            answer = answer.rsplit(cfg.answer_marker, 1)[1].strip()
        values["answer"] = answer
    if values["meta"] is not None and not isinstance(values["meta"], dict):
        raise DataError(f"{where}: field 'meta' must be an object")
    return Example.from_dict(values)


def read_rows(cfg: RewardCommandConfig) -> tuple[list[dict[str, Any]], list[str], list[Example]]:
    path = Path(cfg.input)
    if not path.is_file():
        raise DataError(f"input file not found: {path}")
    rows, completions, examples = [], [], []
    for where, row in jsonl_rows(path):
        if isinstance(row, RowError):
            raise DataError(f"{where}: {row}")
        if cfg.completion_field not in row:
            raise DataError(f"{where}: no '{cfg.completion_field}' field (set completion_field)")
        rows.append(row)
        completions.append(str(row[cfg.completion_field] or ""))
        examples.append(_example(row, cfg, where))
        if cfg.limit and len(rows) >= cfg.limit:
            break
    return rows, completions, examples


def summary_table(scores: RewardScores, terms: list[RewardTerm]) -> Table:
    table = Table(title=f"rewards over {len(scores.total)} completions")
    for column in ("reward", "weight", "mean", "reasons"):
        table.add_column(column)
    counts = scores.reason_counts()
    for (name, values), term in zip(scores.by_name.items(), terms):
        mean = sum(values) / max(len(values), 1)
        reasons = ", ".join(f"{reason} {count}" for reason, count in counts[name].most_common())
        table.add_row(name, f"{term.weight:g}", f"{mean:.3f}", reasons)
    total = sum(scores.total) / max(len(scores.total), 1)
    table.add_row("total", "", f"{total:.3f}", f"errors {scores.errors}, timeouts {scores.timeouts}")
    return table


def run_reward(cfg: RewardCommandConfig) -> RewardScores:
    """Score every row and write `<row> + reward, rewards, reasons` to the output jsonl."""
    rows, completions, examples = read_rows(cfg)
    if not rows:
        raise DataError(f"{cfg.input} holds no rows")
    started = time.perf_counter()
    scores = score_completions(completions, examples, cfg.rewards, workers=cfg.workers, timeout_s=cfg.timeout_s)
    elapsed = time.perf_counter() - started
    output = Path(cfg.output) if cfg.output else Path(cfg.input).with_suffix(".rewards.jsonl")
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8", errors="replace") as handle:
        for i, row in enumerate(rows):
            out = {**row, "reward": scores.total[i],
                   "rewards": {name: values[i] for name, values in scores.by_name.items()},
                   "reasons": {name: reasons[i] for name, reasons in scores.reasons.items()}}
            handle.write(json.dumps(out, ensure_ascii=False) + "\n")
    console = Console(stderr=True)
    console.print(summary_table(scores, list(cfg.rewards)))
    console.print(f"{len(rows)} rows scored in {elapsed:.1f} s ({len(rows) / max(elapsed, 1e-9):.0f}/s) -> {output}")
    return scores
