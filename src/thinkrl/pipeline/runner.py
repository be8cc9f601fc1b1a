"""`thinkrl pipeline r1.yaml`: run a list of stages, each one an ordinary thinkrl command.

A stage names a command (`zero`, `sft`, `sample`, `grpo`, `eval`, ...) and that command's
config; `${name}` inside any string is replaced by what stage `name` produced (its final
checkpoint folder, its dataset file, its metrics file). Every stage works in its own
folder under the run folder, and records there, in `stage.json`, a key: the hash of its
resolved config and of the keys of the stages it reads from. A rerun:
  - skips a stage whose `stage.json` says done with the same key;
  - resumes a stage that was started with the same key and did not finish (`resume: true`
    for the training commands; `sample` continues from its finished shards);
  - starts afresh a stage whose key changed (and so, through the keys, every stage after
    it that reads its output).
Under `accelerate launch` every process runs the pipeline: training stages run on all of
them, the others (sampling, evaluation) and all bookkeeping on the main process alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator
from rich.console import Console

from thinkrl.commands import get_command
from thinkrl.config import Config, build_config, merge_dicts, read_yaml
from thinkrl.errors import ConfigError
from thinkrl.files import atomic_write
from thinkrl.pipeline.stages import stage_kind
from thinkrl.processes import is_main_launched_process, main_process_only
from thinkrl.sections import OutputRunConfig, set_torch_threads
from thinkrl.train.interrupts import TrainingInterrupted

log = logging.getLogger(__name__)
STATE = "stage.json"
_REF = re.compile(r"\$\{([A-Za-z0-9_\-]+)\}")


class StageSpec(Config):
    name: str = Field(..., description="stage name: its folder under the run folder, and what ${name} refers to")
    command: str = Field(..., description="the thinkrl command this stage runs "
                         "(tiny, zero, grpo, sft, sample, distill, eval)")
    config_file: str | None = Field(None, description="the command's YAML config file to start from (e.g. "
                                    "configs/r1-zero-qwen2.5-math-7b.yaml); `config` is applied on top of it")
    config: dict[str, Any] = Field(default_factory=dict, description="the command's config (as in its YAML file); "
                                   "${stage} in a string is replaced by that stage's output")
    label: str | None = Field(None, description="row name in the summary table (eval stages)")

    def merged_config(self) -> dict[str, Any]:
        """config_file's contents with `config` on top (sections merged, other values replaced)."""
        if self.config_file is None:
            return self.config
        return merge_dicts(read_yaml(self.config_file), self.config)


class PipelineRunConfig(OutputRunConfig):
    output_dir: str = Field("runs/pipeline", description="run folder: one sub-folder per stage, summary.json")
    torch_threads: int = Field(0, ge=0, description="torch CPU threads for every stage (0: torch's default)")


class PipelineConfig(Config):
    renamed: ClassVar[dict[str, str]] = {"output_dir": "run.output_dir", "torch_threads": "run.torch_threads"}

    stages: list[StageSpec] = Field(default_factory=list, description="stages, run in order")
    only: list[str] = Field([], description="run only these stages (and nothing else); empty: all")
    title: str = Field("pipeline", description="title of the summary table")
    run: PipelineRunConfig = PipelineRunConfig()

    @model_validator(mode="after")
    def _names_and_refs(self) -> PipelineConfig:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"stage name '{stage.name}' is used twice")
            if not re.fullmatch(r"[A-Za-z0-9_\-]+", stage.name):
                raise ValueError(f"stage name '{stage.name}' must be letters, digits, '_' or '-'")
            stage_kind(stage.command)  # an unknown command fails here, naming the valid ones
            for ref in references(stage.merged_config()):
                if ref not in seen:
                    raise ValueError(f"stage '{stage.name}' reads ${{{ref}}}, which is not an earlier stage")
            seen.add(stage.name)
        for name in self.only:
            if name not in seen:
                raise ValueError(f"only: no stage named '{name}'")
        if not self.stages:
            raise ValueError("a pipeline needs at least one stage")
        return self


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Run (or skip, or resume) every stage in order; returns {stage: its record}."""
    console = Console(quiet=not is_main_launched_process())
    root = Path(cfg.run.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    set_torch_threads(cfg.run.torch_threads)
    check_stage_configs(cfg)
    records: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for index, stage in enumerate(cfg.stages, start=1):
        folder = root / stage.name
        config = stage.merged_config()
        resolved = substitute(config, {name: rec["output"] for name, rec in records.items()})
        key = stage_key(stage.command, resolved, [records[r]["key"] for r in sorted(references(config))])
        state = main_process_only(lambda folder=folder: read_state(folder))
        if cfg.only and stage.name not in cfg.only:
            if state.get("status") != "done":
                raise ConfigError(f"stage '{stage.name}' has not finished; later stages need it (drop it from 'only')")
            records[stage.name] = state
            continue
        header = f"[bold]{index}/{len(cfg.stages)} {stage.name}[/] ({stage.command})"
        if state.get("status") == "done" and state.get("key") == key:
            console.rule(f"{header}: done before, skipped")
            records[stage.name] = state
            continue
        resume = state.get("status") == "running" and state.get("key") == key
        if state and not resume:  # a different config: what is there belongs to another run
            main_process_only(lambda folder=folder: shutil.rmtree(folder))
        console.rule(f"{header}: {'resuming' if resume else 'running'}")
        records[stage.name] = run_stage(stage, resolved, folder, key, resume)
    summary = {"seconds": round(time.perf_counter() - started, 1), "stages": records}
    main_process_only(lambda: write_json(root / "summary.json", summary))
    from thinkrl.pipeline.summary import print_summary

    print_summary(cfg, records, console)
    console.print(f"run folder: {root}  ({summary['seconds']:.0f} s)")
    return records


def run_stage(stage: StageSpec, resolved: dict[str, Any], folder: Path, key: str, resume: bool) -> dict[str, Any]:
    kind = stage_kind(stage.command)
    command = get_command(stage.command)
    config = stage_config(stage, resolved, folder, resume)

    def start() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / STATE, {"status": "running", "key": key, "command": stage.command})

    def finish() -> dict[str, Any]:
        record = {"status": "done", "key": key, "command": stage.command, "output": str(kind.product_path(folder)),
                  "seconds": round(time.perf_counter() - t0, 1), "label": stage.label}
        metrics = kind.read_metrics(folder)
        if metrics is not None:
            record["metrics"] = metrics
        write_json(folder / STATE, record)
        return record

    main_process_only(start)
    t0 = time.perf_counter()
    def run_command() -> None:  # returns nothing: the other processes need no copy of the result
        command.runner()(config)

    try:
        if kind.every_process:  # training: accelerate splits the work over the launched processes
            run_command()
        else:
            main_process_only(run_command)
    except TrainingInterrupted as exc:  # the stage stays 'running': a rerun resumes it
        exc.resume_command = f"the same `thinkrl pipeline` command (it resumes stage '{stage.name}')"
        raise
    return main_process_only(finish)


def stage_config(stage: StageSpec, resolved: dict[str, Any], folder: Path, resume: bool) -> Config:
    """The config a stage's command runs with: its resolved config with the stage folder (and
    resume) placed in it, built exactly as `thinkrl COMMAND` would build it."""
    data = stage_kind(stage.command).place(resolved, folder, resume)
    return build_config(get_command(stage.command).config_model(), data)


def check_stage_configs(cfg: PipelineConfig) -> None:
    """Validate every stage's config before the first one runs, so a typo in stage 9 is
    reported now, not after an hour of stages 1-8 (${stage} stands in as a placeholder path)."""
    for stage in cfg.stages:
        config = stage.merged_config()
        placeholder = substitute(config, {name: f"/{name}" for name in references(config)})
        try:
            stage_config(stage, placeholder, Path(cfg.run.output_dir) / stage.name, False)
        except ConfigError as exc:
            raise ConfigError(f"stage '{stage.name}' ({stage.command}): {exc}") from None


def references(value: Any) -> set[str]:
    """The stage names a config reads through ${name}."""
    if isinstance(value, str):
        return set(_REF.findall(value))
    if isinstance(value, dict):
        return set().union(*(references(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(references(v) for v in value)) if value else set()
    return set()


def substitute(value: Any, outputs: dict[str, str]) -> Any:
    """`value` with every ${name} replaced by stage name's output path."""
    if isinstance(value, str):
        return _REF.sub(lambda m: outputs[m.group(1)], value)
    if isinstance(value, dict):
        return {k: substitute(v, outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, outputs) for v in value]
    return value


def stage_key(command: str, config: dict[str, Any], upstream_keys: list[str]) -> str:
    blob = json.dumps({"command": command, "config": config, "upstream": upstream_keys}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_state(folder: Path) -> dict[str, Any]:
    path = folder / STATE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:  # cannot happen with write_json, but a hand-edited file might
        return {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=2, default=str) + "\n")
