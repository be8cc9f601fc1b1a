"""Accuracy rewards: `accuracy` routes on `example.kind` to the right checker.

"math" -> math-verify (math_grading.py); "code" -> the tests run in the sandbox; any other
kind is a synthetic task whose own exact checker decides (`thinkrl.data.tasks`).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from thinkrl.data.example import Example
from thinkrl.errors import DataError
from thinkrl.rewards.base import RewardResult, register
from thinkrl.rewards.extract import AnswerMode, extract_answer, extract_code
from thinkrl.rewards.math_grading import _math_needs_worker, math_accuracy


def code_prelude(prompt: str) -> str:
    """A prompt that is Python (a HumanEval signature and its helpers: `poly`, `encode_cyclic`)
    is trusted code the tests may call; the tests never see the program's own copy of it."""
    try:
        module = ast.parse(prompt)
    except (SyntaxError, ValueError):
        return ""
    defines = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)
    return prompt if any(isinstance(node, defines) for node in module.body) else ""


@register("code_accuracy", isolate=True)
def code_accuracy(completion: str, example: Example, partial: bool = False, include_prompt: bool = False,
                  time_limit_s: float = 4.0, memory_mb: int = 512, isolation: str | None = None) -> RewardResult:
    """1.0 when the last code block passes all of `example.tests` in the sandbox, else 0.0
    (or the share of passed test units with `partial=True`). `include_prompt` puts the
    prompt (a HumanEval signature) in front of the code. `isolation` names a sandbox mode;
    "setuid" and "rlimits" (no namespaces) run only when named here or in THINKRL_SANDBOX_MODE."""
    from thinkrl.sandbox import SandboxLimits, run_tests

    if not example.tests:
        raise DataError(f"example {example.id or '(no id)'} has kind 'code' but no tests")
    code = extract_code(completion)
    if code is None:
        return RewardResult(0.0, "no_code")
    program = f"{example.prompt}\n{code}" if include_prompt else code
    limits = SandboxLimits(wall_time_s=time_limit_s, cpu_time_s=max(0.5, time_limit_s * 0.8), memory_mb=memory_mb)
    result = run_tests(program, example.tests, example.entry_point, limits, isolation, prelude=code_prelude(example.prompt))
    if result.all_passed:
        return RewardResult(1.0, "correct")
    reason = "wrong" if result.status == "failed" else result.status
    score = result.passed / result.total if partial and result.total else 0.0
    return RewardResult(float(score), reason)


def task_accuracy(completion: str, example: Example, answer_mode: AnswerMode = "auto") -> RewardResult:
    """A synthetic task's exact checker on the extracted answer."""
    from thinkrl.data.tasks import get_task

    task = get_task(example.kind)
    answer = extract_answer(completion, answer_mode)
    if answer is None:
        return RewardResult(0.0, "no_answer")
    return RewardResult(1.0, "correct") if task.check(answer, example) else RewardResult(0.0, "wrong")


def _accuracy_needs_worker(completion: str, example: Example, options: Mapping[str, Any]) -> bool:
    if example.kind == "math":
        return _math_needs_worker(completion, example, options)
    return example.kind == "code"


@register("accuracy", isolate=_accuracy_needs_worker)
def accuracy(completion: str, example: Example, answer_mode: AnswerMode = "auto", partial: bool = False,
             include_prompt: bool = False, timeout_s: float = 5.0, isolation: str | None = None) -> RewardResult:
    """Correctness whatever the example's kind: math, code or a synthetic task (`isolation`:
    the code sandbox's mode, see code_accuracy)."""
    if example.kind == "math":
        return math_accuracy(completion, example, answer_mode=answer_mode, timeout_s=timeout_s)
    if example.kind == "code":
        return code_accuracy(completion, example, partial=partial, include_prompt=include_prompt, isolation=isolation)
    if example.kind == "general":
        raise DataError(f"example {example.id or '(no id)'} has kind 'general': rule rewards cannot grade it (use a judge)")
    return task_accuracy(completion, example, answer_mode=answer_mode)
