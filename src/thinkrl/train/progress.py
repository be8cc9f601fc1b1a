"""A rich progress bar for training steps that shows the numbers worth watching."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

WATCHED = (("reward/mean", "reward"), ("accuracy", "acc"), ("completion/length_mean", "len"), ("kl", "kl"))


class StepProgress:
    def __init__(self, total: int, done: int, title: str) -> None:
        self._progress = Progress(
            TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
        )
        self._task = self._progress.add_task(title, total=total, completed=done, info="")

    def __enter__(self) -> "StepProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def advance(self, metrics: dict) -> None:
        info = "  ".join(f"{short} {metrics[key]:.3g}" for key, short in WATCHED if isinstance(metrics.get(key), (int, float)))
        self._progress.update(self._task, advance=1, info=info)
