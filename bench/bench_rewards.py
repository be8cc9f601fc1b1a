"""Rewards per second of the batch scorer on 1000 samples: math (MATH-500 references against
model-like answers) and code (HumanEval canonical and wrong solutions in the sandbox).

    .venv/bin/python bench/bench_rewards.py [--workers 2] [--n 1000]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from thinkrl.data.example import Example
from thinkrl.rewards import RewardTerm, score_completions

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def math_batch(n: int, rng: random.Random) -> tuple[list[str], list[Example]]:
    rows = [json.loads(line) for line in (DATA / "math500" / "test.jsonl").read_text().splitlines()]
    completions, examples = [], []
    for i in range(n):
        row = rows[i % len(rows)]
        answer = row["answer"] if rng.random() < 0.5 else rows[rng.randrange(len(rows))]["answer"]
        shape = rng.choice(["<think>{s}</think> <answer>{a}</answer>", "{s} The answer is $\\boxed{{{a}}}$.", "{s}"])
        completions.append(shape.format(s=row["solution"][:400], a=answer))
        examples.append(Example(prompt=row["problem"], answer=row["answer"], id=row["unique_id"]))
    return completions, examples


def code_batch(n: int, rng: random.Random) -> tuple[list[str], list[Example]]:
    rows = [json.loads(line) for line in (DATA / "humaneval" / "HumanEval.jsonl").read_text().splitlines()]
    completions, examples = [], []
    for i in range(n):
        row = rows[i % len(rows)]
        body = row["canonical_solution"] if rng.random() < 0.5 else "    return None\n"
        completions.append(f"<think>plan</think>\n```python\n{row['prompt']}{body}\n```")
        examples.append(Example(prompt=row["prompt"], kind="code", tests=row["test"], entry_point=row["entry_point"]))
    return completions, examples


def bench(label: str, completions: list[str], examples: list[Example], workers: int, timeout_s: float) -> None:
    terms = [RewardTerm(name="accuracy"), RewardTerm(name="format_r1_zero", weight=0.5)]
    score_completions(completions[:4], examples[:4], terms, workers=workers, timeout_s=timeout_s)  # start the pool
    started = time.perf_counter()
    scores = score_completions(completions, examples, terms, workers=workers, timeout_s=timeout_s)
    elapsed = time.perf_counter() - started
    accuracy = sum(scores.by_name["accuracy"]) / len(completions)
    print(f"{label}: {len(completions)} samples in {elapsed:.2f} s = {len(completions) / elapsed:.0f} samples/s "
          f"(workers={workers}, accuracy {accuracy:.2f}, errors {scores.errors}, timeouts {scores.timeouts}, "
          f"reasons {dict(scores.reason_counts()['accuracy'])})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", choices=["math", "code"], default=None)
    args = parser.parse_args()
    rng = random.Random(0)
    if args.only in (None, "math"):
        bench("math", *math_batch(args.n, rng), workers=args.workers, timeout_s=5.0)
    if args.only in (None, "code"):
        bench("code", *code_batch(args.n, rng), workers=args.workers, timeout_s=20.0)


if __name__ == "__main__":
    main()
