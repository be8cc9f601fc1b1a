"""The batch scorer and the registry: weights, reasons, failures that score 0, hangs that time out."""

from __future__ import annotations

import logging
import os
import time

import pytest

from thinkrl.data.example import Example
from thinkrl.errors import ConfigError
from thinkrl.rewards import (
    RewardResult,
    RewardTerm,
    get_reward,
    r1_zero_spec,
    register,
    score_completions,
)
from thinkrl.rewards.pool import WorkerPool, shared_pool


@register("test_raises", isolate=False)
def raises_inline(completion: str, example: Example) -> RewardResult:
    if "boom" in completion:
        raise RuntimeError("reward bug")
    return RewardResult(1.0, "fine")


@register("test_raises_in_worker")
def raises_in_worker(completion: str, example: Example) -> RewardResult:
    if "boom" in completion:
        raise RuntimeError("reward bug")
    return RewardResult(0.5, "fine")


@register("test_hangs")
def hangs(completion: str, example: Example, seconds: float = 60.0) -> RewardResult:
    if "hang" in completion:
        time.sleep(seconds)
    return RewardResult(1.0, "fine")


@register("test_exits")
def exits(completion: str, example: Example) -> RewardResult:
    if "exit" in completion:
        os._exit(3)
    return RewardResult(1.0, "fine")


@register("test_bad_result", isolate=False)
def bad_result(completion: str, example: Example) -> RewardResult:
    return RewardResult(float("nan"), "nan") if "nan" in completion else 0.7  # type: ignore[return-value]


@register("test_pid")
def worker_pid(completion: str, example: Example) -> RewardResult:
    return RewardResult(float(os.getpid()), "pid")


EX = Example(prompt="What is 2+2?", answer="4")


def test_weights_totals_and_reasons() -> None:
    completions = ["<think>2+2</think> <answer>4</answer>", "<answer>5</answer>", "nothing"]
    scores = score_completions(completions, [EX] * 3, r1_zero_spec(), workers=2)
    assert scores.by_name["accuracy"] == [1.0, 0.0, 0.0]
    assert scores.by_name["format_r1_zero"] == [1.0, 0.0, 0.0]
    assert scores.total == [1.5, 0.0, 0.0]
    assert scores.reasons["accuracy"] == ["correct", "wrong", "no_answer"]
    assert scores.reason_counts()["format_r1_zero"]["format_missing_think"] == 2
    assert scores.errors == scores.timeouts == 0
    in_process = score_completions(completions, [EX] * 3, r1_zero_spec(), workers=0)
    assert in_process.total == scores.total and in_process.reasons == scores.reasons


def test_synthetic_task_kinds_are_checked_by_their_task() -> None:
    from thinkrl.data.tasks import get_task

    example = get_task("chain").generate(1, seed=3)[0]
    right = f"<think>steps</think> <answer>{example.answer}</answer>"
    scores = score_completions([right, "<answer>definitely not it</answer>"], [example, example], r1_zero_spec(), workers=0)
    assert scores.by_name["accuracy"] == [1.0, 0.0]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_raising_reward_scores_zero_and_is_counted(workers: int, caplog) -> None:
    name = "test_raises" if workers == 0 else "test_raises_in_worker"
    with caplog.at_level(logging.WARNING):
        scores = score_completions(["ok", "boom", "ok"], [EX] * 3, [RewardTerm(name=name, weight=2.0)], workers=workers)
    assert scores.by_name[name][1] == 0.0 and scores.reasons[name][1] == "error"
    assert scores.by_name[name][0] > 0 and scores.total[0] == 2 * scores.by_name[name][0]
    assert scores.errors == 1
    assert any(name in record.getMessage() and "reward bug" in record.getMessage() for record in caplog.records)


def test_malformed_results_are_errors() -> None:
    scores = score_completions(["nan", "other"], [EX] * 2, [RewardTerm(name="test_bad_result")], workers=0)
    assert scores.by_name["test_bad_result"] == [0.0, 0.0] and scores.errors == 2


def test_a_hanging_reward_is_killed_and_the_caller_goes_on() -> None:
    pool = shared_pool(2)
    before = pool.replaced
    started = time.monotonic()
    scores = score_completions(["hang", "ok", "ok", "ok"], [EX] * 4, [RewardTerm(name="test_hangs")], workers=2, timeout_s=1.0)
    assert time.monotonic() - started < 8.0
    assert scores.by_name["test_hangs"] == [0.0, 1.0, 1.0, 1.0]
    assert scores.reasons["test_hangs"][0] == "timeout" and scores.timeouts == 1
    assert pool.replaced == before + 1
    again = score_completions(["ok"] * 3, [EX] * 3, [RewardTerm(name="test_hangs")], workers=2, timeout_s=1.0)
    assert again.by_name["test_hangs"] == [1.0] * 3


def test_a_worker_that_dies_is_replaced() -> None:
    scores = score_completions(["exit", "ok"], [EX] * 2, [RewardTerm(name="test_exits")], workers=2)
    assert scores.by_name["test_exits"] == [0.0, 1.0] and scores.errors == 1


def test_workers_are_persistent_processes() -> None:
    first = score_completions(["a", "b"], [EX] * 2, [RewardTerm(name="test_pid")], workers=2).by_name["test_pid"]
    second = score_completions(["a", "b"], [EX] * 2, [RewardTerm(name="test_pid")], workers=2).by_name["test_pid"]
    assert os.getpid() not in first
    assert set(first) & set(second)  # the same processes served both batches


def test_pool_rejects_no_workers() -> None:
    with pytest.raises(ValueError):
        WorkerPool(0)


def test_registry_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="did you mean 'accuracy'"):
        get_reward("acuracy")
    with pytest.raises(ConfigError, match="has no option 'partal'"):
        score_completions(["x"], [EX], [RewardTerm(name="accuracy", options={"partal": True})])
    with pytest.raises(ConfigError, match="empty"):
        score_completions(["x"], [EX], [])
    with pytest.raises(ValueError, match="already registered"):
        register("accuracy")(lambda c, e: RewardResult(0.0, "x"))


def test_repeated_terms_are_reported_apart() -> None:
    terms = [RewardTerm(name="format_r1_zero"), RewardTerm(name="format_r1_zero", weight=0.5, options={"prefilled_think": True})]
    scores = score_completions(["2+2</think><answer>4</answer>"], [EX], terms, workers=0)
    assert scores.by_name == {"format_r1_zero#0": [0.0], "format_r1_zero#1": [1.0]}
    assert scores.total == [0.5]


def test_the_package_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, thinkrl.rewards, thinkrl.rewards.command; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
