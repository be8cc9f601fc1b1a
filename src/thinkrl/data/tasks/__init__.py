"""Synthetic reasoning tasks: seeded problem generators with exact answer checkers.

Each task makes problems where writing the steps out (a scratchpad) turns a hard
one-shot guess into a few easy steps, so a small model's accuracy depends on whether it
thinks first: the property R1-Zero style RL needs to have something to reinforce.
Every task draws held-out problems (seed 1234) from a split no other seed can reach
(see `split.py`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from thinkrl.data.example import Example
from thinkrl.data.tasks.chain import ChainTask
from thinkrl.data.tasks.countdown import CountdownTask
from thinkrl.data.tasks.split import HELDOUT_SEED
from thinkrl.errors import DataError


@runtime_checkable
class Task(Protocol):
    """A family of generated problems with a way to grade and to solve them."""

    name: str

    def generate(self, n: int, seed: int) -> list[Example]:
        """`n` distinct problems, the same ones for the same seed."""
        ...

    def check(self, answer: str, example: Example) -> bool:
        """Whether `answer` (the model's extracted final answer text) is correct; never raises."""
        ...

    def scratchpad(self, example: Example) -> str:
        """A correct step-by-step reasoning text for `example`, without the think tags."""
        ...


TASKS: dict[str, Task] = {task.name: task for task in (ChainTask(), CountdownTask())}


def get_task(name: str) -> Task:
    """The registered task called `name`."""
    try:
        return TASKS[name]
    except KeyError:
        raise DataError(f"unknown task '{name}'; valid tasks: {', '.join(sorted(TASKS))}") from None


__all__ = ["HELDOUT_SEED", "TASKS", "ChainTask", "CountdownTask", "Task", "get_task"]
