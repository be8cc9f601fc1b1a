"""The pretraining corpus that makes the tiny model behave like a *base* model.

Every text is `User: {prompt}. Assistant:` and a completion. The same prompt is followed
sometimes by a bare answer (usually wrong, as a base model's guess), sometimes by a
correct scratchpad in `<think>` tags, sometimes by a scratchpad with a slip in it. So the
model learns both habits and picks between them at random: it thinks now and then, and
when it does it is mostly right. That gap is what R1-Zero style RL can exploit.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from thinkrl.data.example import Example
from thinkrl.data.tasks import Task


@dataclass(frozen=True)
class CorpusMix:
    """Shares of each completion style (the rest of 1 - direct - noisy is clean scratchpads)."""

    direct: float = 0.55
    noisy_think: float = 0.1
    direct_correct: float = 0.2  # how often a bare answer is right anyway
    untagged: float = 0.1  # bare answers written without <answer> tags (format slips)


def prompt_text(prompt: str) -> str:
    """The compact R1-Zero prompt form the tiny model is pretrained on (= its chat template)."""
    return f"User: {prompt}. Assistant:"


def wrong_answer(correct: int, rng: random.Random) -> int:
    """A plausible but wrong guess: near the right value, or anywhere in the usual range."""
    while True:
        guess = correct + rng.choice([-1, 1]) * rng.randint(1, 12) if rng.random() < 0.6 else rng.randint(0, 99)
        if guess != correct and guess >= 0:
            return guess


def direct_completion(answer: str, rng: random.Random, mix: CorpusMix) -> str:
    if rng.random() < mix.direct_correct:
        value = answer
    elif answer.lstrip("-").isdigit():
        value = str(wrong_answer(int(answer), rng))
    else:  # a non-numeric reference (countdown's expression): guess a number instead
        value = str(rng.randint(0, 99))
    if rng.random() < mix.untagged:
        return rng.choice([f"{value}", f"The answer is {value}", f"It is {value}"])
    return rng.choice([f"<answer>{value}</answer>"] * 4 + [f"<answer> {value} </answer>"])


def think_completion(reasoning: str, answer: str, rng: random.Random) -> str:
    """Scratchpad then answer, with small variations in layout."""
    sep = rng.choice([" "] * 6 + [", ", "\n"])
    reasoning = reasoning.replace(" ", sep)
    gap = rng.choice([""] * 6 + [" ", "\n"])
    return f"<think>{reasoning}</think>{gap}<answer>{answer}</answer>"


_STEP = re.compile(r"(\d+)([-+*/])(\d+)=(\d+)")


def noisy_reasoning(reasoning: str, rng: random.Random) -> tuple[str, str]:
    """The scratchpad with one step's result off by a little, carried through the later
    steps (each still computed correctly from the slipped value, never going negative or
    dividing unevenly); returns (text, answer)."""
    steps = reasoning.split(" ")
    parsed = [_STEP.fullmatch(step) for step in steps]
    if not all(parsed):
        return reasoning, str(rng.randint(0, 99))
    for attempt in range(20):
        i = rng.randrange(len(steps)) if attempt < 19 else len(steps) - 1  # a last-step slip always works
        right = int(parsed[i].group(4))
        value = right + (rng.choice([-1, 1]) if attempt < 19 else 1) * rng.randint(1, 10)
        if value < 0 or value == right:
            continue
        out = steps[:i] + [steps[i].rpartition("=")[0] + f"={value}"]
        for match in parsed[i + 1:]:
            op, operand = match.group(2), int(match.group(3))
            new = _apply(value, op, operand)
            if new is None:
                break
            out.append(f"{value}{op}{operand}={new}")
            value = new
        else:
            return " ".join(out), str(value)
    raise AssertionError("unreachable: a last-step slip upwards is always valid")


def _apply(value: int, op: str, operand: int) -> int | None:
    """`value op operand` when it is a non-negative integer, else None."""
    if op == "/":
        return value // operand if operand and value % operand == 0 else None
    new = {"+": value + operand, "-": value - operand, "*": value * operand}[op]
    return new if new >= 0 else None


def completion(task: Task, example: Example, rng: random.Random, mix: CorpusMix) -> str:
    """One completion for `example` in a randomly chosen style."""
    roll = rng.random()
    if roll < mix.direct:
        return direct_completion(str(example.answer), rng, mix)
    reasoning = task.scratchpad(example)
    if roll < mix.direct + mix.noisy_think:
        reasoning, answer = noisy_reasoning(reasoning, rng)
        return think_completion(reasoning, answer, rng)
    return think_completion(reasoning, str(example.answer), rng)


def corpus_texts(task: Task, n: int, seed: int, mix: CorpusMix) -> list[tuple[str, str]]:
    """`n` (prompt text, completion) pairs from `task` problems drawn with `seed`."""
    rng = random.Random(seed)
    return [(prompt_text(ex.prompt), completion(task, ex, rng, mix)) for ex in task.generate(n, seed)]
