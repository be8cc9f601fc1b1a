"""The folder of a `thinkrl sample` run: what makes it resumable and what it hands on.

`config.yaml` says which config the folder belongs to; `shards/shard-NNNNN.json` holds each
finished shard, written atomically (tmp file + os.replace) so a crash leaves either a whole
shard or none. When every shard is there, the final files are assembled from them:
data.jsonl and dataset/ (the kept rows), dropped.jsonl (every dropped answer with why),
contaminated.jsonl (prompts kept out before sampling) and report.json (the counts).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from thinkrl.config import to_yaml
from thinkrl.config_hints import with_new_names
from thinkrl.data.example import Example
from thinkrl.errors import ConfigError, DataError
from thinkrl.files import atomic_write

DATA_FILE, DROPPED_FILE, CONTAMINATED_FILE = "data.jsonl", "dropped.jsonl", "contaminated.jsonl"
REPORT_FILE, CONFIG_FILE, DATASET_DIR, SHARDS_DIR = "report.json", "config.yaml", "dataset", "shards"
# Fields (dotted) that do not change what a run produces: a rerun may change them and resume.
RESUME_NEUTRAL = ("overwrite", "run.torch_threads", "reward_workers")
COLUMNS = ("prompt", "response", "question", "answer", "kind", "id", "reward")


@dataclass
class ShardResult:
    """What one shard produced: kept rows, dropped rows (each with its reason) and counts."""

    index: int
    prompt_hash: str  # of the prompts it was sampled from: a resumed run must see the same ones
    generated: int
    judged: int
    kept: list[dict[str, Any]]
    dropped: list[dict[str, Any]]


@dataclass
class SampleResult:
    """Where the dataset went and how much survived (`report` is report.json's content)."""

    output_dir: Path
    data_path: Path
    dataset_path: Path
    dropped_path: Path
    report_path: Path
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return int(self.report.get("kept", 0))


def prepare_output_dir(out: Path, config: BaseModel, overwrite: bool) -> None:
    """Resume only a run of the same config; start over with `overwrite`; refuse otherwise."""
    text = to_yaml(config)
    current = yaml.safe_load(text)  # as the stored file will read back
    stored_path = out / CONFIG_FILE
    shards = out / SHARDS_DIR
    if stored_path.is_file():
        stored = with_new_names(type(config), yaml.safe_load(stored_path.read_text()) or {})
        changed = changed_fields(stored, current)
        if changed and not overwrite:
            raise ConfigError(f"{out} holds a sample run with a different config ({', '.join(changed[:5])} changed); "
                              f"use another run.output_dir or set overwrite=true to start over")
        if changed:
            clear_run(out)
    elif shards.is_dir() and any(shards.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} holds shards but no {CONFIG_FILE}; use another run.output_dir or set overwrite=true")
        clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(stored_path, text)


def changed_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ (resume-neutral fields ignored)."""
    if isinstance(old, dict) and isinstance(new, dict):
        changed = []
        for key in sorted(set(old) | set(new)):
            if f"{prefix}{key}" in RESUME_NEUTRAL:
                continue
            changed += changed_fields(old.get(key), new.get(key), f"{prefix}{key}.")
        return changed
    return [] if old == new else [prefix.rstrip(".")]


def clear_run(out: Path) -> None:
    """Remove what a sample run writes, and nothing else in the folder."""
    for name in (SHARDS_DIR, DATASET_DIR):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (DATA_FILE, DROPPED_FILE, CONTAMINATED_FILE, REPORT_FILE, CONFIG_FILE):
        (out / name).unlink(missing_ok=True)


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def shard_path(shard_dir: Path, index: int) -> Path:
    return shard_dir / f"shard-{index:05d}.json"


def write_shard(shard_dir: Path, result: ShardResult) -> None:
    atomic_write(shard_path(shard_dir, result.index), json.dumps(dataclasses.asdict(result), ensure_ascii=False))


def read_shard(shard_dir: Path, index: int, prompt_hash: str) -> ShardResult | None:
    """A finished shard, or None if it still has to be sampled."""
    path = shard_path(shard_dir, index)
    if not path.is_file():
        return None
    try:
        result = ShardResult(**json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError):
        return None  # unreadable (written by hand, or by another version): sample it again
    if result.prompt_hash != prompt_hash:
        raise DataError(f"{path} was sampled from other prompts than data gives now (the data changed); "
                        f"use another run.output_dir or delete the folder")
    return result


def build_report(results: list[ShardResult], prompts: int, contaminated: int, source: str) -> dict[str, Any]:
    """The counts of a finished run: every generated answer is either kept or dropped for one reason."""
    kept = [row for r in results for row in r.kept]
    reasons = Counter(row["reason"] for r in results for row in r.dropped)
    generated = sum(r.generated for r in results)
    return {
        "source": source,
        "prompts": prompts,
        "contaminated_prompts": contaminated,
        "generated": generated,
        "kept": len(kept),
        "dropped": dict(reasons.most_common()),
        "kept_rate": len(kept) / generated if generated else 0.0,
        "prompts_with_a_kept_answer": len({row["id"] for row in kept}),
        "judged": sum(r.judged for r in results),
        "mean_kept_response_chars": sum(len(row["response"]) for row in kept) / len(kept) if kept else 0.0,
        "shards": len(results),
    }


def write_outputs(out: Path, results: list[ShardResult], contaminated: list[Example],
                  report: dict[str, Any]) -> SampleResult:
    """data.jsonl, dataset/ (datasets.save_to_disk), dropped.jsonl, contaminated.jsonl, report.json."""
    import datasets

    kept = [row for r in results for row in r.kept]
    atomic_write(out / DATA_FILE, _jsonl(kept))
    atomic_write(out / DROPPED_FILE, _jsonl([row for r in results for row in r.dropped]))
    atomic_write(out / CONTAMINATED_FILE, _jsonl([{"id": ex.id, "question": ex.prompt} for ex in contaminated]))
    features = datasets.Features({name: datasets.Value("float64" if name == "reward" else "string") for name in COLUMNS})
    table = datasets.Dataset.from_dict({name: [row[name] for row in kept] for name in COLUMNS}, features=features)
    tmp = out / (DATASET_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with _quiet_datasets():  # our own progress bar and table say what happened
        table.save_to_disk(str(tmp))
    shutil.rmtree(out / DATASET_DIR, ignore_errors=True)
    os.replace(tmp, out / DATASET_DIR)
    atomic_write(out / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    return SampleResult(out, out / DATA_FILE, out / DATASET_DIR, out / DROPPED_FILE, out / REPORT_FILE, report)


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def summary_table(report: dict[str, Any], n: int, output_dir: str) -> Table:
    table = Table(title=f"rejection sampling from {report['source']} -> {output_dir}", header_style="bold")
    table.add_column("")
    table.add_column("count", justify="right")
    generated = report["generated"] or 1
    table.add_row("prompts sampled", str(report["prompts"]))
    table.add_row("prompts left out as contaminated", str(report["contaminated_prompts"]))
    table.add_row(f"answers generated (n={n})", str(report["generated"]))
    table.add_row("[green]kept", f"{report['kept']} ({100 * report['kept'] / generated:.1f}%)")
    for reason, count in report["dropped"].items():
        table.add_row(f"dropped: {reason}", f"{count} ({100 * count / generated:.1f}%)")
    table.add_row("prompts with a kept answer", str(report["prompts_with_a_kept_answer"]))
    if report["judged"]:
        table.add_row("answers graded by the judge", str(report["judged"]))
    return table


def print_summary(report: dict[str, Any], n: int, output_dir: str, console: Console | None = None) -> None:
    (console or Console()).print(summary_table(report, n, output_dir))
