"""Where an evaluation's results go: metrics.json and samples.jsonl on disk, a table on screen."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from thinkrl.eval.evaluate import EvalMetrics, EvalResult

METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.jsonl"


def write_results(result: EvalResult, output_dir: str | Path) -> Path:
    """Write metrics.json and samples.jsonl (one graded response per line); returns the folder."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / METRICS_FILE).write_text(json.dumps(result.metrics.as_dict(), indent=2) + "\n")
    with open(folder / SAMPLES_FILE, "w") as f:
        f.writelines(json.dumps(dataclasses.asdict(record), ensure_ascii=False) + "\n" for record in result.samples)
    return folder


def metrics_table(result: EvalResult, title: str = "evaluation") -> Table:
    m = result.metrics
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("questions", str(m.questions)),
        ("greedy accuracy", _pct(m.greedy_accuracy)),
        (f"pass@1 (k={m.k})", _pct(m.pass_at_1)),
        (f"pass@{m.k}", _pct(m.pass_at_k)),
        (f"cons@{m.k}", _pct(m.cons_at_k)),
        ("format rate", _pct(m.format_rate)),
        ("language consistency", _pct(m.language_consistency)),
        ("mean response tokens", f"{m.mean_response_tokens:.1f}"),
        ("truncated", _pct(m.truncated_rate)),
        ("scratchpad use", _pct(m.scratchpad_rate)),
        ("reflection (any word)", _pct(m.reflection_rate)),
        ("reflection words", ", ".join(f"{w}={n}" for w, n in m.reflection_words.items()) or "-"),
        ("prompts over the context", _long_prompts(m)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def print_table(result: EvalResult, console: Console | None = None, title: str = "evaluation") -> None:
    (console or Console()).print(metrics_table(result, title))


def _long_prompts(m: EvalMetrics) -> str:
    """How many prompts did not fit the model's context with max_new_tokens, and what became of them."""
    if m.prompt_budget is None:
        return "- (model context unknown)"
    if not m.long_prompts:
        return f"0 (all fit {m.prompt_budget} prompt tokens)"
    return f"{m.long_prompts} {m.long_prompts_action} (over {m.prompt_budget} prompt tokens)"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
