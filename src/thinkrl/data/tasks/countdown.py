"""`countdown`: reach a target from given numbers with + - * /, each number at most once.

Any correct expression is accepted. Answers are untrusted model output, so they are
parsed with `ast` into a whitelist of nodes (numbers and the four operations) and
evaluated exactly with fractions; `eval` is never called.
"""

from __future__ import annotations

import ast
import random
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

from thinkrl.data.example import Example
from thinkrl.data.tasks.draw import draw_problems

_MAX_ANSWER_CHARS = 200
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


@dataclass(frozen=True)
class CountdownProblem:
    numbers: tuple[int, ...]
    target: int
    steps: tuple[tuple[int, str, int, int], ...]  # (left, op, right, result): one way to the target
    expression: str

    def key(self) -> str:
        return f"{sorted(self.numbers)}->{self.target}"


def _combine(left: int, op: str, right: int) -> int | None:
    """Result of one step when it stays a positive integer, else None."""
    if op == "+":
        return left + right
    if op == "-":
        return left - right if left > right else None
    if op == "*":
        return left * right
    return left // right if right > 1 and left % right == 0 else None


class CountdownTask:
    """`min_numbers`..`max_numbers` numbers in 1..`max_number`; the target is built from them."""

    name = "countdown"

    def __init__(self, min_numbers: int = 3, max_numbers: int = 4, max_number: int = 12, max_target: int = 200) -> None:
        if not 2 <= min_numbers <= max_numbers:
            raise ValueError(f"need 2 <= min_numbers <= max_numbers, got {min_numbers}, {max_numbers}")
        self.min_numbers, self.max_numbers = min_numbers, max_numbers
        self.max_number, self.max_target = max_number, max_target

    def _sample(self, rng: random.Random) -> CountdownProblem:
        while True:
            numbers = [rng.randint(1, self.max_number) for _ in range(rng.randint(self.min_numbers, self.max_numbers))]
            used = rng.sample(numbers, k=rng.randint(2, len(numbers)))
            value, text, steps = used[0], str(used[0]), []
            for i, right in enumerate(used[1:]):
                op = rng.choice("+-*/")
                result = _combine(value, op, right)
                if result is None:
                    break
                steps.append((value, op, right, result))
                text = f"{text}{op}{right}"
                if i < len(used) - 2:
                    text = f"({text})"
                value = result
            else:
                if 1 <= value <= self.max_target and value not in numbers:
                    return CountdownProblem(tuple(numbers), value, tuple(steps), text)

    def generate(self, n: int, seed: int) -> list[Example]:
        problems = draw_problems(self.name, n, seed, self._sample, key=CountdownProblem.key)
        return [
            Example(prompt=f"Make {p.target} from {' '.join(map(str, p.numbers))} with + - * /",
                    answer=p.expression, kind=self.name, id=f"{self.name}-{seed}-{i}",
                    meta={"numbers": list(p.numbers), "target": p.target,
                          "steps": [list(s) for s in p.steps]})
            for i, p in enumerate(problems)
        ]

    def check(self, answer: str, example: Example) -> bool:
        """`answer` is an expression (optionally `expr = target`) using allowed numbers only."""
        try:
            return _valid(answer, list(example.meta["numbers"]), int(example.meta["target"]))
        except Exception:  # noqa: BLE001 - untrusted text: whatever goes wrong, it is simply not a solution
            return False

    def scratchpad(self, example: Example) -> str:
        return " ".join(f"{a}{op}{b}={c}" for a, op, b, c in example.meta["steps"])


def _valid(answer: str, numbers: list[int], target: int) -> bool:
    if not isinstance(answer, str) or len(answer) > _MAX_ANSWER_CHARS:
        return False
    text = answer.strip().replace("×", "*").replace("÷", "/")
    if text.count("=") > 1:
        return False
    if "=" in text:
        text, claimed = text.split("=")
        if claimed.strip() != str(target):
            return False
    tree = ast.parse(text.strip(), mode="eval")
    used: list[int] = []
    value = _evaluate(tree.body, used)
    return value == target and not Counter(used) - Counter(numbers)


def _evaluate(node: ast.AST, used: list[int]) -> Fraction:
    """Exact value of a whitelisted expression, recording the numbers it uses."""
    if isinstance(node, ast.Constant) and type(node.value) is int and node.value >= 0:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _evaluate(node.left, used), _evaluate(node.right, used)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        return left / right  # ZeroDivisionError is caught by `check`
    raise ValueError(f"not allowed in a countdown answer: {type(node).__name__}")
