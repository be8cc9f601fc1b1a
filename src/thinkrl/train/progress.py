"""Training progress: a rich bar on a terminal, plain lines otherwise.

Under nohup, Slurm or `> run.log` stdout is not a terminal and rich draws nothing, so a log
stayed empty for a whole run; there, each step writes one flushed line instead.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

WATCHED = (("reward/mean", "reward"), ("accuracy", "acc"), ("completion/length_mean", "len"), ("kl", "kl"))


def plain_line(title: str, step: int, total: int, info: str, seconds_per_step: float) -> str:
    """One progress line: step, the watched numbers, time per step and the time left."""
    left = max(total - step, 0) * seconds_per_step
    eta = f"{left / 3600:.1f}h" if left >= 3600 else f"{left / 60:.1f}m" if left >= 60 else f"{left:.0f}s"
    return f"{title} step {step}/{total}  {info}  {seconds_per_step:.2f} s/step  ETA {eta}".replace("    ", "  ")


class StepProgress:
    """`watched`: (metric key, short label) pairs shown next to the bar (GRPO's by default);
    `enabled=False` draws nothing (processes other than the main one in a multi-process run).
    """

    def __init__(self, total: int, done: int, title: str, watched: tuple[tuple[str, str], ...] = WATCHED,
                 enabled: bool = True) -> None:
        self._watched, self._title, self._total, self._step = watched, title, total, done
        self._plain = enabled and not Console().is_terminal
        self._started, self._done_at_start = time.monotonic(), done
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
        self._progress.update(self._task, advance=1, info=info)
        if self._plain:
            per_step = (time.monotonic() - self._started) / max(self._step - self._done_at_start, 1)
            print(plain_line(self._title, self._step, self._total, info, per_step), flush=True)
