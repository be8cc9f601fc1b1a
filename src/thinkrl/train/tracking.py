"""Where a run's numbers go: metrics.jsonl always, TensorBoard and W&B when asked,
sample completions as jsonl, and a rich progress line on screen."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricsTracker:
    """Appends one json line per step; resumable (a resumed run drops lines past its step)."""

    def __init__(self, run_dir: str | Path, trackers: Iterable[str] = (), resume_step: int | None = None,
                 config: dict[str, Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.samples_path = self.run_dir / "samples.jsonl"
        if resume_step is None:
            for path in (self.metrics_path, self.samples_path):
                path.unlink(missing_ok=True)
        else:  # lines written after the checkpoint belong to steps that will be redone
            for path in (self.metrics_path, self.samples_path):
                _truncate_after(path, resume_step)
        self._tb = None
        self._wandb = None
        trackers = list(trackers)
        if "tensorboard" in trackers:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        if "wandb" in trackers:
            try:
                import wandb
            except ImportError:
                from thinkrl.errors import ThinkrlError

                raise ThinkrlError("run.trackers names wandb but it is not installed: pip install 'thinkrl[wandb]'") from None
            self._wandb = wandb.init(project="thinkrl", dir=str(self.run_dir), config=config or {}, resume="allow")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        numeric = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
        if self._tb is not None:
            for key, value in numeric.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(numeric, step=step)

    def log_samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        with self.samples_path.open("a") as f:
            for row in rows:
                f.write(json.dumps({"step": step, **row}, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _truncate_after(path: Path, step: int) -> None:
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)
