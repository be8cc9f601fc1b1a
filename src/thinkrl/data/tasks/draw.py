"""Drawing distinct problems for a seed, honouring the held-out split."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

from thinkrl.data.tasks.split import allowed_for_seed
from thinkrl.errors import DataError

P = TypeVar("P")


def draw_problems(name: str, n: int, seed: int, sample: Callable[[random.Random], P],
                  key: Callable[[P], str]) -> list[P]:
    """`n` distinct problems from `sample(rng)`, keeping only those in `seed`'s split.

    The rng is seeded by the task name and seed only, so the list is reproducible.
    """
    if n < 0:
        raise DataError(f"{name}: cannot generate a negative number of problems ({n})")
    rng = random.Random(f"{name}/{seed}")
    seen: set[str] = set()
    problems: list[P] = []
    attempts = 0
    max_attempts = 100 * n + 1000
    while len(problems) < n:
        attempts += 1
        if attempts > max_attempts:
            raise DataError(f"{name}: only {len(problems)} distinct problems found for n={n}, seed={seed}; "
                            f"ask for fewer or widen the task's ranges")
        problem = sample(rng)
        k = key(problem)
        if k in seen or not allowed_for_seed(k, seed):
            continue
        seen.add(k)
        problems.append(problem)
    return problems
