"""Training progress: a start line, a rich bar on a terminal (plain lines otherwise), an end line.

Under nohup, Slurm or `> run.log` stdout is not a terminal and rich draws nothing, so a log
stayed empty for a whole run; there, each step writes one flushed line instead. The start
and end lines go to stdout either way: a log says what ran, from where, and how it ended.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

WATCHED = (("reward/mean", "reward"), ("accuracy", "acc"), ("completion/length_mean", "len"), ("kl", "kl"))


def plain_line(title: str, step: int, total: int, info: str, seconds_per_step: float) -> str:
    """One progress line: step, the watched numbers, time per step and the time left."""
    eta = duration(max(total - step, 0) * seconds_per_step)
    return f"{title} step {step}/{total}  {info}  {seconds_per_step:.2f} s/step  ETA {eta}".replace("    ", "  ")


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f}h" if seconds >= 3600 else f"{seconds / 60:.1f}m" if seconds >= 60 else f"{seconds:.0f}s"


def start_line(title: str, run_dir: Path, model: str, data: str, start_step: int, checkpoint: Path | None) -> str:
    how = f"resumed from step {start_step} ({checkpoint})" if checkpoint else "new run"
    return f"{title}: {how}; run folder {run_dir}; model {model}; data {data}"


def end_line(title: str, steps: int, final_dir: Path, headline: str, seconds: float) -> str:
    return f"{title}: finished step {steps} in {duration(seconds)}; final model {final_dir}; {headline or 'no metrics'}"


def say(line: str, enabled: bool = True) -> None:
    """A start or end line, on stdout, flushed (main process only: `enabled`)."""
    if enabled:
        print(line, flush=True)


class StepProgress:
    """`watched`: (metric key, short label) pairs shown next to the bar (GRPO's by default);
    `enabled=False` draws nothing (processes other than the main one in a multi-process run).
    """

    def __init__(self, total: int, done: int, title: str, watched: tuple[tuple[str, str], ...] = WATCHED,
                 enabled: bool = True) -> None:
        self._watched, self._title, self._total, self._step = watched, title, total, done
        self._plain = enabled and not Console().is_terminal
        self._started, self._done_at_start = time.monotonic(), done
        self._recent: deque[dict] = deque(maxlen=10)
        self._progress = Progress(
            TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), transient=False, disable=not enabled or self._plain,
        )
        self._task = self._progress.add_task(title, total=total, completed=done, info="")

    def __enter__(self) -> StepProgress:  # noqa: PYI034
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def advance(self, metrics: dict) -> None:
        info = "  ".join(f"{short} {metrics[key]:.3g}" for key, short in self._watched if isinstance(metrics.get(key), (int, float)))
        self._step += 1
        self._recent.append(metrics)
        self._progress.update(self._task, advance=1, info=info)
        if self._plain:
            per_step = (time.monotonic() - self._started) / max(self._step - self._done_at_start, 1)
            print(plain_line(self._title, self._step, self._total, info, per_step), flush=True)

    def headline(self) -> str:
        """The watched numbers averaged over the last (up to) 10 steps: one step is noisy."""
        parts = []
        for key, short in self._watched:
            values = [m[key] for m in self._recent if isinstance(m.get(key), (int, float))]
            if values:
                parts.append(f"{short} {sum(values) / len(values):.3g}")
        return (f"mean of the last {len(self._recent)} steps: " + ", ".join(parts)) if parts else ""
