"""Real HumanEval problems through the sandbox: canonical solutions pass, wrong ones score partially."""

from __future__ import annotations

import json
import time

import pytest

from thinkrl.sandbox import SandboxLimits, run_many, run_tests

SAMPLE = [0, 2, 10, 32, 38, 53, 87, 107, 129, 163]  # includes find_zero (32) and decode_cyclic (38)


def _problems(data_dir):
    with open(data_dir / "humaneval" / "HumanEval.jsonl") as fh:
        return [json.loads(line) for line in fh]


def _job(problem, body=None):
    """(program, tests, entry point, prelude): the prompt's helpers (poly, encode_cyclic)
    reach the tests from the trusted prompt, not from the program."""
    program = problem["prompt"] + (problem["canonical_solution"] if body is None else body)
    return program, problem["test"] + f"\ncheck({problem['entry_point']})\n", problem["entry_point"], problem["prompt"]


def test_canonical_solutions_pass(data_dir):
    problems = _problems(data_dir)
    results = run_many([_job(problems[i]) for i in SAMPLE], max_workers=2)
    for i, result in zip(SAMPLE, results, strict=True):
        assert result.all_passed, f"HumanEval/{i}: {result}"
        # 32 and 38 test inside one loop: one unit; the others have one unit per assert
        assert result.passed == result.total and result.total >= (1 if i in (32, 38) else 3)


def test_wrong_solution_fails_with_partial_counts(data_dir):
    problem = _problems(data_dir)[2]  # truncate_number: 3 asserts
    result = run_tests(*_job(problem, "    return 0.5\n")[:3])  # right only for the first (3.5 -> 0.5)
    assert result.status == "failed"
    assert (result.passed, result.total) == (1, 3)
    assert result.outcomes == ["pass", "fail", "fail"]
    assert "AssertionError" in result.detail


def test_entry_point_without_final_check_call(data_dir):
    problem = _problems(data_dir)[0]
    result = run_tests(problem["prompt"] + problem["canonical_solution"], problem["test"], problem["entry_point"])
    assert result.all_passed and result.total == 7


def test_program_that_does_not_compile_is_an_error(data_dir):
    problem = _problems(data_dir)[0]
    result = run_tests(*_job(problem, "    return (\n")[:3])
    assert result.status == "error" and result.passed == 0
    assert "SyntaxError" in result.detail


def test_run_many_keeps_order_and_overlaps(data_dir):
    problems = _problems(data_dir)
    slow = ("import time\ndef f():\n    time.sleep(0.8)\n    return 1\n", "assert f() == 1\n", "f")
    started = time.monotonic()
    results = run_many([slow] * 4 + [_job(problems[0], "    return None\n")], max_workers=4)
    elapsed = time.monotonic() - started
    assert [r.all_passed for r in results] == [True] * 4 + [False]
    assert elapsed < 4 * 0.8, elapsed  # the four sleeps overlapped


def test_closing_stdout_does_not_hide_a_correct_answer():
    program = "import os, sys\nos.close(1)\nos.close(2)\ndef f():\n    return 1\n"
    result = run_tests(program, "def check(candidate):\n    assert candidate() == 1\n", "f")
    assert result.all_passed


def test_output_is_captured_and_truncated():
    program = "print('hello from the sandbox')\ndef f():\n    return 1\n"
    result = run_tests(program, "assert f() == 1\n", "f", SandboxLimits(max_output_bytes=1000))
    assert result.all_passed and "hello from the sandbox" in result.stdout


@pytest.mark.slow
def test_all_164_canonical_solutions_pass(data_dir):
    problems = _problems(data_dir)
    results = run_many([_job(p) for p in problems], max_workers=2)
    failures = [(p["task_id"], r.status, r.detail) for p, r in zip(problems, results, strict=True) if not r.all_passed]
    assert failures == []
