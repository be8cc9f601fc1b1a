"""Format, language consistency and length shaping rewards."""

from __future__ import annotations

import random
import re
import time

import pytest

from thinkrl.data.example import Example
from thinkrl.rewards import get_reward
from thinkrl.rewards.language import MAX_SCORED_CHARS, strip_math_or_code
from thinkrl.rewards.length import cosine_value, overlong_penalty

PLAIN = Example(prompt="Q", answer="4")
PREFILLED = Example(prompt="Q <think>", answer="4", meta={"prompt_prefills_think": True})


@pytest.mark.parametrize("completion,reason", [
    ("<think>2+2 is 4</think> <answer>4</answer>", "format_ok"),
    ("\n<think>\nadd\n</think>\n<answer>\n4\n</answer>\n", "format_ok"),
    ("<think>add</think><answer>4</answer> and more", "format_extra_text"),
    ("Sure! <think>add</think><answer>4</answer>", "format_extra_text"),
    ("<think>add</think> so <answer>4</answer>", "format_extra_text"),
    ("<answer>4</answer>", "format_missing_think"),
    ("<think>add</think>", "format_missing_answer"),
    ("<think>add</think><answer>4", "format_missing_answer"),
    ("<answer>4</answer><think>add</think>", "format_order"),
    ("<think>add</think><answer>4</answer><answer>5</answer>", "format_duplicate_tag"),
    ("<think>a</think><think>b</think><answer>4</answer>", "format_duplicate_tag"),
    ("<think> </think><answer>4</answer>", "format_empty_think"),
    ("<think>add</think><answer>  </answer>", "format_empty_answer"),
    ("", "format_missing_think"),
])
def test_format_r1_zero(completion: str, reason: str) -> None:
    result = get_reward("format_r1_zero")(completion, PLAIN)
    assert result.reason == reason
    assert result.score == (1.0 if reason == "format_ok" else 0.0)


def test_format_r1_zero_with_prefilled_think() -> None:
    fn = get_reward("format_r1_zero")
    # The prompt ends with <think>: the completion starts inside the think block.
    assert fn("2+2 is 4</think> <answer>4</answer>", PREFILLED).score == 1.0
    assert fn("2+2 is 4</think> <answer>4</answer>", PLAIN).reason == "format_missing_think"
    assert fn("2+2 is 4</think> <answer>4</answer>", PLAIN, prefilled_think=True).score == 1.0
    assert fn("<think>2+2</think> <answer>4</answer>", PREFILLED).reason == "format_duplicate_tag"
    assert fn("<think>2+2</think> <answer>4</answer>", PREFILLED, prefilled_think=False).score == 1.0


@pytest.mark.parametrize("completion,example,reason", [
    ("<think>add them</think>The answer is 4.", PLAIN, "format_ok"),
    ("add them</think>The answer is 4.", PREFILLED, "format_ok"),
    ("add them</think>The answer is 4.", PLAIN, "format_missing_think"),
    ("<think>add them</think>   ", PLAIN, "format_missing_answer"),
    ("</think>x<think>", PLAIN, "format_order"),
    ("hi <think>add</think> 4", PLAIN, "format_text_before_think"),
    ("<think>a</think><think>b</think> 4", PLAIN, "format_duplicate_tag"),
])
def test_format_r1(completion: str, example: Example, reason: str) -> None:
    result = get_reward("format_r1")(completion, example)
    assert result.reason == reason
    assert result.score == (1.0 if reason == "format_ok" else 0.0)


@pytest.mark.parametrize("completion,language,low,high,reason", [
    ("<think>First we add the numbers, then we divide by two to get the mean.</think>4", "en", 1.0, 1.0, "consistent"),
    ("<think>We need $\\frac{3}{4} + x^2 = 17$ so x = 4 and \\sqrt{16} = 4.</think>", "en", 1.0, 1.0, "consistent"),
    ("<think>$1+2=3$ 42 `x = y`</think>", "en", 1.0, 1.0, "no_words"),
    ("<think>First we add the numbers 然后我们除以二</think>", "en", 0.4, 0.6, "mixed"),
    ("<think>Сначала сложим все числа</think>", "en", 0.0, 0.0, "other_language"),
    ("<think>Ensuite on calcule la somme des nombres puis on divise par deux.</think>", "en", 0.0, 0.0, "other_language"),
    ("<think>Ensuite on calcule la somme des nombres puis on divise par deux.</think>", "fr", 1.0, 1.0, "consistent"),
    ("<think>Ensuite on calcule la somme des nombres. Then we divide the sum by the count.</think>", "en", 0.3, 0.7, "mixed"),
    ("<think>然后我们除以二, 得到 x = 4</think>", "zh", 1.0, 1.0, "consistent"),
    ("<think>We add them up.</think>然后我们除以二", "en", 1.0, 1.0, "consistent"),  # only the thought counts
])
def test_language_consistency(completion: str, language: str, low: float, high: float, reason: str) -> None:
    result = get_reward("language_consistency")(completion, PLAIN, language=language)
    assert low <= result.score <= high and result.reason == reason


def test_language_consistency_prefilled_think() -> None:
    fn = get_reward("language_consistency")
    assert fn("We add them up.</think>4", PREFILLED).score == 1.0
    assert fn("Сначала сложим</think>4", PREFILLED).score == 0.0


# The regex language.py used to drop math and code: the meaning strip_math_or_code keeps.
OLD_MATH_OR_CODE = re.compile(r"```.*?```|`[^`]*`|\$\$.*?\$\$|\$[^$]*\$|\\\(.*?\\\)|\\\[.*?\\\]|\\[A-Za-z]+", re.DOTALL)
FLOOD_CHARS = 64 * 1024


def test_strip_math_or_code_matches_the_regex_it_replaced() -> None:
    rng = random.Random(0)
    alphabet = ["\\", "(", ")", "[", "]", "$", "`", "a", "b", " ", "\n"]
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        assert strip_math_or_code(text) == OLD_MATH_OR_CODE.sub(" ", text), text
    assert strip_math_or_code("see $x$ and \\(y\\), `code`, \\frac{1}{2} ```a\nb``` here") == "see   and  ,  ,  {1}{2}   here"


def _seconds(fn, text: str) -> float:
    """The best of three timings of `fn` on `text` (the best is the least disturbed by load)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        fn(text, PLAIN)
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize("unit", ["\\(", "\\[", "$", "\\boxed{"])
def test_language_consistency_is_linear_on_floods_of_openers(unit: str) -> None:
    fn = get_reward("language_consistency")
    fn("We warm up the identifier.", PLAIN)
    prose = ("We add the numbers, then we divide the sum by two. " * FLOOD_CHARS)[:FLOOD_CHARS]
    flood = (unit * FLOOD_CHARS)[:FLOOD_CHARS]
    baseline = _seconds(fn, prose)  # plain prose of the same size: linear work
    assert fn(flood, PLAIN).reason == "no_words"
    assert _seconds(fn, flood) < 10 * baseline + 0.05  # was 10 s (150x the baseline) for \( and \[


def test_language_consistency_scores_a_bounded_prefix() -> None:
    fn = get_reward("language_consistency")
    sentence = "We add the numbers, then we divide the sum by two. "
    capped = (sentence * MAX_SCORED_CHARS)[:MAX_SCORED_CHARS]
    huge = sentence * (16 * MAX_SCORED_CHARS // len(sentence))
    assert fn(huge, PLAIN) == fn(capped, PLAIN)
    assert _seconds(fn, huge) < 3 * _seconds(fn, capped) + 0.05  # 16x the text, not 16x the time


def test_overlong_penalty_values() -> None:
    assert [overlong_penalty(n, 100, 20) for n in (0, 80, 85, 90, 100, 101, 10_000)] == [0.0, 0.0, -0.25, -0.5, -1.0, -1.0, -1.0]
    with pytest.raises(ValueError):
        overlong_penalty(10, 100, 0)
    fn = get_reward("overlong")
    assert fn("x" * 50, PLAIN, max_len=100, cache=20, unit="chars").reason == "within_length"
    assert fn("x" * 90, PLAIN, max_len=100, cache=20, unit="chars").score == -0.5
    assert fn("short", PLAIN, max_len=100, cache=20, completion_tokens=95).score == -0.75  # the sampler's count wins
    counted = Example(prompt="Q", answer="4", meta={"completion_tokens": 120})
    assert fn("short", counted, max_len=100, cache=20).reason == "overlong"


def test_overlong_counts_tokens_with_a_real_tokenizer(qwen_tokenizer_dir) -> None:
    text = "hello world " * 60  # 720 characters, about 120 tokens
    by_chars = get_reward("overlong")(text, PLAIN, max_len=700, cache=100, unit="chars")
    by_tokens = get_reward("overlong")(text, PLAIN, max_len=700, cache=100, tokenizer=str(qwen_tokenizer_dir))
    assert by_chars.score == -1.0 and by_tokens.score == 0.0


def test_cosine_length() -> None:
    assert cosine_value(0, 100, 1.0, 0.5) == pytest.approx(1.0)
    assert cosine_value(50, 100, 1.0, 0.5) == pytest.approx(0.75)
    assert cosine_value(100, 100, 1.0, 0.5) == pytest.approx(0.5)
    fn = get_reward("cosine_length")
    short_right = fn("<answer>4</answer>", PLAIN, max_len=1000, unit="chars")
    long_right = fn("x" * 900 + "<answer>4</answer>", PLAIN, max_len=1000, unit="chars")
    short_wrong = fn("<answer>5</answer>", PLAIN, max_len=1000, unit="chars")
    long_wrong = fn("x" * 900 + "<answer>5</answer>", PLAIN, max_len=1000, unit="chars")
    assert short_right.score > long_right.score > long_wrong.score > short_wrong.score
    assert fn("x" * 2000, PLAIN, max_len=1000, unit="chars").reason == "overlong"
