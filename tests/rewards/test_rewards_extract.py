"""Finding the final answer and the final program in a completion."""

from __future__ import annotations

import time

import pytest

from thinkrl.rewards import extract_answer, extract_code


@pytest.mark.parametrize("text,mode,expected", [
    ("so \\boxed{42}.", "auto", "42"),
    ("\\boxed{1} then \\boxed{2}", "auto", "2"),
    ("\\boxed{\\frac{1}{\\sqrt{2}}}", "boxed", "\\frac{1}{\\sqrt{2}}"),
    ("\\fbox{7}", "boxed", "7"),
    ("\\boxed {5}", "boxed", "5"),
    ("\\boxed 5$", "boxed", "5"),
    ("\\boxed{\\{1,2\\}}", "boxed", "\\{1,2\\}"),
    ("\\boxed{1} and a truncated \\boxed{\\frac{2", "boxed", None),
    ("\\boxedx{3}", "boxed", None),
    ("<answer> 12 </answer>", "auto", "12"),
    ("<answer>1</answer> <answer>2</answer>", "answer_tag", "2"),
    ("<answer>so \\boxed{3}</answer>", "auto", "3"),
    ("\\boxed{9} <answer>4</answer>", "auto", "4"),
    ("<answer>4</answer>", "boxed", None),
    ("\\boxed{4}", "answer_tag", None),
    ("<answer>   </answer>", "auto", None),
    ("<answer>unclosed", "auto", None),
    ("", "auto", None),
])
def test_extract_answer(text: str, mode: str, expected: str | None) -> None:
    assert extract_answer(text, mode) == expected


def test_extract_answer_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="answer mode"):
        extract_answer("\\boxed{1}", "last")  # type: ignore[arg-type]


def test_extract_is_linear_on_huge_inputs() -> None:
    text = "{" * 500_000 + "\\boxed{" * 100_000 + "}" * 10
    started = time.monotonic()
    extract_answer(text)
    extract_code("```" * 100_000)
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("text,expected", [
    ("```python\ndef f():\n    return 1\n```", "def f():\n    return 1\n"),
    ("```python\nA = 1\n```\nbetter:\n```python\nA = 2\n```", "A = 2\n"),
    ("```python\nA = 1\n```\n```text\noutput\n```", "A = 1\n"),
    ("```\nB = 3\n```", "B = 3\n"),
    ("```python\n\n```", None),
    ("no code here", None),
])
def test_extract_code(text: str, expected: str | None) -> None:
    assert extract_code(text) == expected
