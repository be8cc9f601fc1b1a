"""Math accuracy: is the final answer equivalent to the reference? (math-verify decides.)

math-verify accepts the equivalent forms graders care about (1/2 = 0.5 = \\frac{1}{2},
percentages, intervals, sets, tuples, LaTeX spacing). Its own timeout uses SIGALRM, which
only works in a main thread and cannot stop a long computation inside C; so it is switched
off here and every check runs in a worker process that the caller can kill
(`pool.guarded_call`, or the batch scorer's pool).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from typing import Any

from thinkrl.data.example import Example
from thinkrl.errors import DataError
from thinkrl.rewards.base import RewardResult, register
from thinkrl.rewards.extract import AnswerMode, extract_answer
from thinkrl.rewards.pool import guarded_call

log = logging.getLogger(__name__)
# With its signal timeout off, math-verify warns once per process that we must bound it
# ourselves, which we do (worker processes); the warning would only confuse users.
logging.getLogger("math_verify").setLevel(logging.ERROR)

_PLAIN_INT = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)")
_MAX_INT_CHARS = 40
_LATEX_MARKERS = ("$", "\\(", "\\[", "\\boxed")


def plain_integer(text: str) -> int | None:
    """`42`, ` -7 `, `$12$`, `1,000` as an int; anything else (or a huge number) is None."""
    stripped = text.strip()
    if stripped.startswith("$") and stripped.endswith("$"):
        stripped = stripped.strip("$").strip()
    if len(stripped) > _MAX_INT_CHARS or not _PLAIN_INT.fullmatch(stripped):
        return None
    return int(stripped.replace(",", ""))


def plain_verdict(answer: str, gold: str) -> bool | None:
    """The verdict when both sides are plain integers (math-verify would agree), else None."""
    a, g = plain_integer(answer), plain_integer(gold)
    if a is None or g is None:
        return None
    return a == g


def _as_latex(text: str) -> str:
    """Reference answers and extracted answers are bare LaTeX; math-verify wants it delimited.
    Currency signs (`\\$18`, or a lone `$18`) are dropped first so they do not read as delimiters."""
    text = text.replace("\\$", "")
    if text.count("$") % 2:
        text = text.replace("$", "")
    return text if any(m in text for m in _LATEX_MARKERS) else f"${text}$"


def _parse(text: str) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(text, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=None)


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> tuple:
    return tuple(_parse(_as_latex(gold)))


def _has_math(parsed: list | tuple) -> bool:
    return any(not isinstance(item, str) for item in parsed)


def grade_math(answer: str, gold: str) -> RewardResult:
    """math-verify's verdict on `answer` against `gold`, unbounded in time: call it only
    where the caller can kill the process (a pool worker)."""
    from math_verify import verify

    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        raise DataError(f"reference answer {gold[:80]!r} cannot be parsed by math-verify")
    pred = _parse(_as_latex(answer))
    if not _has_math(pred):  # prose around the answer ("x = 5 cm"): let math-verify search it
        pred = _parse(answer) or pred
    if not pred:
        return RewardResult(0.0, "unparsable")
    if verify(list(gold_parsed), pred, timeout_seconds=None):
        return RewardResult(1.0, "correct")
    return RewardResult(0.0, "wrong" if _has_math(pred) else "unparsable")


def _reference(example: Example) -> str:
    gold = example.answer
    if gold is None or not str(gold).strip():
        raise DataError(f"example {example.id or '(no id)'} has no reference answer to grade against")
    return str(gold)


def _math_needs_worker(completion: str, example: Example, options: Mapping[str, Any]) -> bool:
    """Only a real math-verify check goes to a worker; missing or plain-integer answers do not."""
    answer = extract_answer(completion, options.get("answer_mode", "auto"))
    if answer is None or example.answer is None or len(answer) > options.get("max_answer_chars", 1000):
        return False
    return plain_verdict(answer, str(example.answer)) is None


@register("math_accuracy", isolate=_math_needs_worker)
def math_accuracy(completion: str, example: Example, answer_mode: AnswerMode = "auto",
                  timeout_s: float = 5.0, max_answer_chars: int = 1000) -> RewardResult:
    """1.0 when the last answer equals `example.answer` mathematically, else 0.0.

    Called directly, the check runs in a helper process bounded by `timeout_s`; inside the
    batch scorer's workers it runs inline (the scorer bounds it).
    """
    gold = _reference(example)
    answer = extract_answer(completion, answer_mode)
    if answer is None:
        return RewardResult(0.0, "no_answer")
    if len(answer) > max_answer_chars:
        return RewardResult(0.0, "too_long")
    verdict = plain_verdict(answer, gold)
    if verdict is not None:
        return RewardResult(float(verdict), "correct" if verdict else "wrong")
    outcome = guarded_call(grade_math, (answer, gold), timeout_s)
    if outcome.status == "ok":
        return outcome.value
    if outcome.status == "timeout":
        log.warning("math_accuracy: no verdict within %g s for answer %r", timeout_s, answer[:80])
        return RewardResult(0.0, "timeout")
    if outcome.message.startswith("DataError"):
        raise DataError(outcome.message.removeprefix("DataError: "))
    log.warning("math_accuracy: error while grading %r: %s", answer[:80], outcome.message)
    return RewardResult(0.0, "error")
