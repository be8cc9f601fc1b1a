"""`chain`: a start number and a few operations applied one after another.

The prompt is bracketed so it reads the same under any convention, e.g. `((7+5)*3)-4`,
and the scratchpad does one operation per step: `7+5=12 12*3=36 36-4=32`. Each step is
small (a two-digit value and a one-digit operand); the whole chain at once is not.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from thinkrl.data.example import Example
from thinkrl.data.tasks.draw import draw_problems

_INT = re.compile(r"[+-]?\d{1,12}(\.0+)?")


@dataclass(frozen=True)
class ChainProblem:
    start: int
    ops: tuple[tuple[str, int], ...]

    def values(self) -> list[int]:
        """The running value after each operation (the last one is the answer)."""
        out, value = [], self.start
        for op, operand in self.ops:
            value = apply_op(value, op, operand)
            out.append(value)
        return out

    def expression(self) -> str:
        text = str(self.start)
        for i, (op, operand) in enumerate(self.ops):
            text = f"{text}{op}{operand}"
            if i < len(self.ops) - 1:
                text = f"({text})"
        return text


def apply_op(value: int, op: str, operand: int) -> int:
    if op == "+":
        return value + operand
    if op == "-":
        return value - operand
    if op == "*":
        return value * operand
    raise ValueError(f"unknown chain operation {op!r}")


def parse_int_answer(answer: str) -> int | None:
    """An integer written as `32`, ` 32 `, `+32`, `32.` or `32.0`; anything else is None."""
    if not isinstance(answer, str) or len(answer) > 64:
        return None
    text = answer.strip()
    text = text.removesuffix(".")
    if not _INT.fullmatch(text):
        return None
    return int(float(text)) if "." in text else int(text)


class ChainTask:
    """Chained +, -, * on values kept within [0, max_value], `min_steps`..`max_steps` operations."""

    name = "chain"

    def __init__(self, min_steps: int = 2, max_steps: int = 4, max_start: int = 30, max_value: int = 99) -> None:
        if not 1 <= min_steps <= max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
        self.min_steps, self.max_steps = min_steps, max_steps
        self.max_start, self.max_value = max_start, max_value

    def _sample(self, rng: random.Random) -> ChainProblem:
        value = rng.randint(1, self.max_start)
        start = value
        ops = []
        for _ in range(rng.randint(self.min_steps, self.max_steps)):
            choices = [("+", b) for b in range(1, 10) if value + b <= self.max_value]
            choices += [("-", b) for b in range(1, 10) if value - b >= 0]
            choices += [("*", b) for b in range(2, 10) if value * b <= self.max_value]
            # Pick the operation first so * is as common as + and - whatever the value.
            kinds = sorted({op for op, _ in choices})
            kind = rng.choice(kinds)
            op, operand = rng.choice([c for c in choices if c[0] == kind])
            value = apply_op(value, op, operand)
            ops.append((op, operand))
        return ChainProblem(start, tuple(ops))

    def generate(self, n: int, seed: int) -> list[Example]:
        problems = draw_problems(self.name, n, seed, self._sample, key=ChainProblem.expression)
        return [
            Example(prompt=p.expression(), answer=str(p.values()[-1]), kind=self.name, id=f"{self.name}-{seed}-{i}",
                    meta={"start": p.start, "ops": [[op, b] for op, b in p.ops], "values": p.values()})
            for i, p in enumerate(problems)
        ]

    def check(self, answer: str, example: Example) -> bool:
        value = parse_int_answer(answer)
        return value is not None and example.answer is not None and str(value) == example.answer.strip()

    def scratchpad(self, example: Example) -> str:
        problem = _problem(example)
        steps, value = [], problem.start
        for (op, operand), result in zip(problem.ops, problem.values()):
            steps.append(f"{value}{op}{operand}={result}")
            value = result
        return " ".join(steps)


def _problem(example: Example) -> ChainProblem:
    return ChainProblem(int(example.meta["start"]), tuple((str(op), int(b)) for op, b in example.meta["ops"]))
