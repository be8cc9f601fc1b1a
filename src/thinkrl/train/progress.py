"""A rich progress bar for training steps that shows the numbers worth watching."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

WATCHED = (("reward/mean", "reward"), ("accuracy", "acc"), ("completion/length_mean", "len"), ("kl", "kl"))


class StepProgress:
    """`watched`: (metric key, short label) pairs shown next to the bar (GRPO's by default);
    `enabled=False` draws nothing (processes other than the main one in a multi-process run).
    """

    def __init__(self, total: int, done: int, title: str, watched: tuple[tuple[str, str], ...] = WATCHED,
                 enabled: bool = True) -> None:
        self._watched = watched
        self._progress = Progress(
            TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), transient=False, disable=not enabled,
        )
        self._task = self._progress.add_task(title, total=total, completed=done, info="")

    def __enter__(self) -> StepProgress:  # noqa: PYI034
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def advance(self, metrics: dict) -> None:
        info = "  ".join(f"{short} {metrics[key]:.3g}" for key, short in self._watched if isinstance(metrics.get(key), (int, float)))
        self._progress.update(self._task, advance=1, info=info)
