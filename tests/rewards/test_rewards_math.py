"""Math grading: equivalent forms, near misses, garbage, hanging inputs, and real reference answers."""

from __future__ import annotations

import json
import time

import pytest

from thinkrl.data.example import Example
from thinkrl.errors import DataError
from thinkrl.rewards import RewardTerm, get_reward, score_completions
from thinkrl.rewards.math_grading import plain_integer, plain_verdict

CASES = [
    # (answer as the model boxes it, reference, expected score)
    ("\\frac{1}{2}", "\\frac{1}{2}", 1), ("0.5", "\\frac{1}{2}", 1), ("1/2", "\\frac{1}{2}", 1),
    ("\\dfrac12", "\\frac{1}{2}", 1), ("\\tfrac{1}{2}", "0.5", 1), ("\\frac{2}{4}", "\\frac12", 1),
    ("50\\%", "0.5", 1), ("50%", "\\frac{1}{2}", 1), ("0.51", "\\frac{1}{2}", 0),
    ("42", "42", 1), ("042", "42", 1), ("-7", "-7", 1), ("7", "-7", 0), ("1,000", "1000", 1),
    ("1000.0", "1000", 1), ("43", "42", 0), ("\\$18", "18", 1), ("18 \\text{ dollars}", "18", 1),
    ("x = 5", "5", 1), ("\\sqrt{2}", "\\sqrt2", 1), ("\\sqrt{8}", "2\\sqrt{2}", 1), ("\\sqrt{3}", "\\sqrt{2}", 0),
    ("\\pi", "\\pi", 1), ("3.14", "\\pi", 0), ("2\\pi", "2 \\pi", 1),
    ("[1, 2)", "[1,2)", 1), ("(1, 2)", "[1,2)", 0), ("(-\\infty, 3]", "(-\\infty,3]", 1),
    ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}", 1), ("\\{1, 2\\}", "\\{1, 2, 3\\}", 0),
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", 1), ("(3, \\pi)", "\\left( 3, \\frac{\\pi}{2} \\right)", 0),
    ("x^2+2x+1", "(x+1)^2", 1), ("x^2+1", "(x+1)^2", 0), ("\\frac{14}{3}", "\\frac{14}{3}", 1), ("4.67", "\\frac{14}{3}", 0),
    ("2, 3", "2,3", 1), ("10^{3}", "1000", 1), ("1 \\times 10^3", "1000", 1), ("\\frac{1}{2", "\\frac{1}{2}", 0),
    ("\\frac{}{}", "1", 0), ("", "1", 0), ("\\text{no idea}", "5", 0), ("\\infty", "\\infty", 1),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", 1), ("90^\\circ", "90", 1),
]


def _grade_all(completions: list[str], golds: list[str], timeout_s: float = 10.0):
    examples = [Example(prompt="", answer=g) for g in golds]
    return score_completions(completions, examples, [RewardTerm(name="math_accuracy")], workers=2, timeout_s=timeout_s)


def test_math_cases_in_batch() -> None:
    assert len(CASES) >= 40
    scores = _grade_all([f"The answer is $\\boxed{{{a}}}$." for a, _, _ in CASES], [g for _, g, _ in CASES])
    wrong = [(a, g, want, got, why) for (a, g, want), got, why
             in zip(CASES, scores.by_name["math_accuracy"], scores.reasons["math_accuracy"]) if got != want]
    assert wrong == []
    assert scores.errors == 0 and scores.timeouts == 0


@pytest.mark.parametrize("completion,reason", [
    ("no box at all", "no_answer"),
    ("\\boxed{}", "no_answer"),
    ("\\boxed{\\frac{}{}}", "unparsable"),
    ("\\boxed{41}", "wrong"),
    ("first \\boxed{41} then, on reflection, \\boxed{42}", "correct"),
    ("<answer>42</answer>", "correct"),
])
def test_direct_call_reasons(completion: str, reason: str) -> None:
    assert get_reward("math_accuracy")(completion, Example(prompt="", answer="42")).reason == reason


def test_direct_call_is_bounded_and_exact() -> None:
    fn = get_reward("math_accuracy")
    assert fn("\\boxed{\\dfrac{1}{2}}", Example(prompt="", answer="0.5")).score == 1.0
    started = time.monotonic()
    result = fn("\\boxed{9^{9^{9^{9^{9}}}}}", Example(prompt="", answer="5"), timeout_s=1.0)
    assert time.monotonic() - started < 6.0
    assert result.score == 0.0 and result.reason in ("timeout", "wrong", "unparsable")


def test_missing_reference_is_a_data_error() -> None:
    with pytest.raises(DataError):
        get_reward("math_accuracy")("\\boxed{1}", Example(prompt="", answer=None))


def test_garbage_inputs_are_bounded_in_batch() -> None:
    huge = "\\boxed{" + "1+" * 500_000 + "1}"  # a 1 MB answer
    garbage = [
        huge,
        "x" * 1_000_000,
        "\\boxed{\udcff\ud800}",  # lone surrogates (undecodable bytes read with surrogateescape)
        b"\\boxed{\xff\xfe}".decode("utf-8", errors="surrogateescape"),
        "\\boxed{9^{9^{9^{9^{9}}}}}",
        "\\boxed{10^{10^{10^{10}}}!}",
        "\\boxed{\\frac{1}{0}}",
        "\\boxed{}}}}{{{",
    ]
    started = time.monotonic()
    scores = _grade_all(garbage, ["12"] * len(garbage), timeout_s=2.0)
    elapsed = time.monotonic() - started
    assert scores.by_name["math_accuracy"] == [0.0] * len(garbage)
    assert elapsed < 20.0  # at most a couple of 2 s timeouts, run two at a time
    assert scores.reasons["math_accuracy"][0] == "too_long"
    assert scores.reasons["math_accuracy"][1] == "no_answer"


def test_plain_integer_fast_path_agrees() -> None:
    assert plain_integer(" $1,234$ ") == 1234 and plain_integer("1.5") is None and plain_integer("9" * 50) is None
    assert plain_verdict("042", "42") is True and plain_verdict("43", "42") is False and plain_verdict("x", "1") is None


def _different(a: str, b: str) -> bool:
    norm = lambda s: s.replace(" ", "").replace("\\!", "").lower()
    return norm(a) not in norm(b) and norm(b) not in norm(a)


def _self_and_other(golds: list[str]) -> tuple[list[str], list[str]]:
    others = []
    for i, gold in enumerate(golds):
        j = (i + 1) % len(golds)
        while not _different(gold, golds[j]):
            j = (j + 1) % len(golds)
        others.append(golds[j])
    return golds, others


def test_math500_references_grade_themselves_correct_and_others_wrong(data_dir) -> None:
    rows = [json.loads(line) for line in (data_dir / "math500" / "test.jsonl").read_text().splitlines()]
    golds, others = _self_and_other([row["answer"] for row in rows])
    completions = [f"Thus \\boxed{{{a}}}" for a in golds + others]
    scores = _grade_all(completions, golds + golds)
    got = scores.by_name["math_accuracy"]
    assert [g for g, s in zip(golds, got[:len(golds)]) if s != 1.0] == []
    assert [(g, o) for g, o, s in zip(golds, others, got[len(golds):]) if s != 0.0] == []


def test_gsm8k_references_grade_themselves_correct_and_others_wrong(data_dir) -> None:
    lines = (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[:200]
    golds = [json.loads(line)["answer"].rsplit("####", 1)[1].strip() for line in lines]
    golds, others = _self_and_other(golds)
    scores = _grade_all([f"\\boxed{{{a}}}" for a in golds + others], golds + golds)
    got = scores.by_name["math_accuracy"]
    assert got[:200] == [1.0] * 200
    assert got[200:] == [0.0] * 200
