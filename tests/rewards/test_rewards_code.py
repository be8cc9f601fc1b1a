"""Code accuracy on real HumanEval problems, run in the real sandbox."""

from __future__ import annotations

import json

import pytest

from thinkrl.data.example import Example
from thinkrl.errors import DataError
from thinkrl.rewards import RewardTerm, get_reward, score_completions


@pytest.fixture(scope="module")
def humaneval(data_dir) -> list[dict]:
    return [json.loads(line) for line in (data_dir / "humaneval" / "HumanEval.jsonl").read_text().splitlines()]


def _example(row: dict) -> Example:
    return Example(prompt=row["prompt"], kind="code", id=row["task_id"], tests=row["test"], entry_point=row["entry_point"])


def _fenced(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\n"


def test_canonical_solutions_pass_and_wrong_ones_fail(humaneval) -> None:
    rows = humaneval[:8]
    examples = [_example(r) for r in rows]
    right = [_fenced(r["prompt"] + r["canonical_solution"]) for r in rows]
    wrong = [_fenced(r["prompt"] + "    return None\n") for r in rows]
    scores = score_completions(right + wrong, examples + examples, [RewardTerm(name="accuracy")], workers=2, timeout_s=20)
    assert scores.by_name["accuracy"] == [1.0] * 8 + [0.0] * 8
    assert set(scores.reasons["accuracy"][8:]) <= {"wrong", "error", "exited", "crashed"}


def test_partial_credit_and_failure_reasons(humaneval) -> None:
    row = next(r for r in humaneval if r["entry_point"] == "has_close_elements")
    example = _example(row)
    fn = get_reward("code_accuracy")
    # Always True: passes the asserts that expect True, fails the others.
    half = _fenced(row["prompt"] + "    return True\n")
    full = fn(half, example)
    partial = fn(half, example, partial=True)
    assert full.score == 0.0 and full.reason == "wrong"
    assert 0.0 < partial.score < 1.0
    assert fn(_fenced(row["prompt"] + "    while True:\n        pass\n"), example, time_limit_s=1.0).reason == "timeout"
    assert fn("no code block", example).reason == "no_code"
    body_only = "```python\n" + row["canonical_solution"] + "```"
    assert fn("```python\n    return True\n```", example, include_prompt=True).score == 0.0
    assert fn(body_only, example, include_prompt=True).score == 1.0
    with pytest.raises(DataError):
        fn(half, Example(prompt="", kind="code"))


def test_tests_call_the_prompts_helpers_not_the_programs(humaneval) -> None:
    row = next(r for r in humaneval if r["entry_point"] == "decode_cyclic")  # its tests call encode_cyclic
    example = _example(row)
    fn = get_reward("code_accuracy")
    assert fn(_fenced(row["prompt"] + row["canonical_solution"]), example).score == 1.0
    # Redefining the helper the tests trust as the identity would make the identity "right".
    forged = "def encode_cyclic(s):\n    return s\n\ndef decode_cyclic(s):\n    return s\n"
    assert fn(_fenced(forged), example).score == 0.0
