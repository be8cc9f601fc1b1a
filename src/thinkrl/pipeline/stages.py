"""What the pipeline must know about each command to run it as a stage: where its output
folder goes in its config, what it hands on to later stages, how it resumes, and which
numbers it reports. Nothing else: the stage itself is the command, unchanged."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinkrl.errors import ConfigError


@dataclass(frozen=True)
class StageKind:
    output_field: tuple[str, ...]  # where the stage folder goes in the command's config
    product: str  # what later stages get, relative to the stage folder ("" = the folder itself)
    resume_field: str | None = None  # a bool field that makes the command continue its last run
    metrics_file: str | None = None  # numbers the stage reports, relative to the stage folder
    every_process: bool = False  # under `accelerate launch`: run on every process (training), else on the main one

    def place(self, config: dict[str, Any], folder: Path, resume: bool) -> dict[str, Any]:
        """The config with its output folder set to `folder` (and resume on when resuming)."""
        data = copy.deepcopy(config)
        node = data
        for part in self.output_field[:-1]:
            node = node.setdefault(part, {})
        node[self.output_field[-1]] = str(folder)
        if self.resume_field is not None:
            data[self.resume_field] = resume
        return data

    def product_path(self, folder: Path) -> Path:
        return folder / self.product if self.product else folder

    def read_metrics(self, folder: Path) -> dict[str, Any] | None:
        if self.metrics_file is None:
            return None
        path = folder / self.metrics_file
        return json.loads(path.read_text()) if path.is_file() else None


_TRAINING = StageKind(("run", "output_dir"), "final", resume_field="resume", every_process=True)
KINDS: dict[str, StageKind] = {
    "tiny": StageKind(("output_dir",), ""),
    "zero": _TRAINING,
    "grpo": _TRAINING,
    "sft": _TRAINING,
    "sample": StageKind(("run", "output_dir"), "data.jsonl", metrics_file="report.json"),
    "distill": StageKind(("run", "output_dir"), "student/final", every_process=True),  # samples on the main process
    "eval": StageKind(("run", "output_dir"), "metrics.json", metrics_file="metrics.json"),
}


def stage_kind(command: str) -> StageKind:
    try:
        return KINDS[command]
    except KeyError:
        raise ConfigError(f"command '{command}' cannot be a pipeline stage; stages are: {', '.join(KINDS)}") from None
