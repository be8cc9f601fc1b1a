"""Rejection-sampling filters and n-gram decontamination, on hand-written answers and the
real MATH-500 / GSM8K files."""

from __future__ import annotations

import json

import pytest

from thinkrl.config import build_config
from thinkrl.data.example import Example
from thinkrl.errors import ConfigError
from thinkrl.pipeline.decontam import DecontamConfig, NgramIndex, build_index, source_texts, words
from thinkrl.pipeline.filters import (
    FilterConfig,
    bad_format,
    code_block,
    dedup_key,
    duplicates,
    first_problem,
    long_paragraph,
    mixed_language,
)

MATH = Example(prompt="What is 2+3?", answer="5", kind="math", id="m")
CODE = Example(prompt="def add(a, b):", kind="code", id="c", tests="assert add(1, 2) == 3", entry_point="add")


# ---------------------------------------------------------------- language


def test_mixed_language_chain_of_thought_is_dropped():
    text = ("<think>First we add the two numbers together carefully. 然后我们把这两个数字加在一起得到答案。"
            "So the sum is five.</think> The answer is 5.")
    assert mixed_language(text, MATH) == "mixed_language"


def test_english_chain_of_thought_with_math_is_kept():
    text = "<think>We add the two numbers: $2+3=5$, so the sum is five. Let me check again: 5-3=2.</think> 5"
    assert mixed_language(text, MATH) is None


def test_language_is_judged_inside_the_think_block_only():
    # Chinese after </think> is the answer, not the chain of thought.
    text = "<think>We add the two numbers and get five as the sum.</think> 答案是五"
    assert mixed_language(text, MATH) is None


def test_prefilled_think_counts_text_before_the_closing_tag():
    prefilled = Example(prompt="What is 2+3?", answer="5", meta={"prompt_prefills_think": True})
    text = "我们把这两个数字加在一起得到五 and that gives five.</think> 5"
    assert mixed_language(text, prefilled) == "mixed_language"


def test_chinese_target_keeps_chinese_and_drops_english():
    chinese = "<think>我们把这两个数字加在一起得到五。</think> 5"
    english = "<think>We simply add the two numbers together to get five here.</think> 5"
    assert mixed_language(chinese, MATH, language="zh") is None
    assert mixed_language(english, MATH, language="zh") == "mixed_language"


def test_unknown_language_is_a_config_error():
    with pytest.raises(ConfigError, match="filters.language|language"):
        build_config(FilterConfig, {"language": "klingon"})


# ---------------------------------------------------------------- paragraphs, code, format


def test_long_paragraph_is_dropped_but_the_same_text_split_in_paragraphs_is_kept():
    sentence = "We keep adding the numbers one after the other. "
    wall = "<think>" + sentence * 50 + "</think> 5"
    split = "<think>" + "\n\n".join([sentence * 10] * 5) + "</think> 5"
    assert len(wall) > 2000
    assert long_paragraph(wall, MATH, max_chars=2000) == "long_paragraph"
    assert long_paragraph(split, MATH, max_chars=2000) is None


def test_a_blank_line_made_of_spaces_still_separates_paragraphs():
    text = "a" * 60 + "\n   \n" + "b" * 60
    assert long_paragraph(text, MATH, max_chars=100) is None
    assert long_paragraph(text.replace("\n   \n", " "), MATH, max_chars=100) == "long_paragraph"


def test_code_block_in_a_math_answer_is_dropped_but_kept_for_code():
    text = "<think>Let me write code.</think>\n```python\nprint(2+3)\n```\nThe answer is 5."
    assert code_block(text, MATH) == "code_block"
    assert code_block(text, CODE) is None
    assert code_block("<think>2+3=5</think> 5", MATH) is None


def test_bad_format_returns_the_format_reward_reason():
    assert bad_format("<answer>5</answer>", MATH) == "format_missing_think"
    assert bad_format("<think>2+3=5</think>", MATH) == "format_missing_answer"
    assert bad_format("<think>2+3=5</think> <answer>5</answer>", MATH) is None


def test_first_problem_runs_only_enabled_filters_in_order():
    cfg = FilterConfig()
    assert first_problem("   ", MATH, cfg) == "empty"
    assert first_problem("The answer is 5", MATH, cfg) == "format_missing_think"
    assert first_problem("The answer is 5", MATH, FilterConfig(require_format=False)) is None
    code = "<think>I will use code.</think> ```print(5)```"
    assert first_problem(code, MATH, cfg) == "code_block"
    assert first_problem(code, MATH, FilterConfig(no_code_in_non_code=False)) is None
    mixed = "<think>We add the numbers here now. 我们把这两个数字加在一起得到答案。</think> 5"
    assert first_problem(mixed, MATH, cfg) == "mixed_language"
    assert first_problem(mixed, MATH, FilterConfig(language=None)) is None
    long = "<think>" + "add the numbers " * 20 + "</think> 5"
    assert first_problem(long, MATH, FilterConfig(max_paragraph_chars=100)) == "long_paragraph"
    assert first_problem(long, MATH, FilterConfig(max_paragraph_chars=None)) is None


# ---------------------------------------------------------------- dedup


def test_dedup_ignores_case_and_whitespace_only():
    texts = ["<think>2+3=5</think> 5", "<THINK>2+3=5</think>\n  5 ", "<think>2+3 = 5</think> 5", "<think>2+3=5</think> 5"]
    assert duplicates(texts) == [False, True, False, True]
    assert dedup_key("  A\tB\nc ") == "a b c"


# ---------------------------------------------------------------- decontamination


def _math500(data_dir):
    with open(data_dir / "math500" / "test.jsonl") as f:
        return [json.loads(line) for line in f]


def test_words_drop_punctuation_and_case_but_keep_operators():
    assert words("What's  (7+5)*3, Bob?") == ["what", "s", "7", "+", "5", "*", "3", "bob"]


def test_a_copied_math500_problem_is_flagged_and_an_unrelated_one_is_not(data_dir):
    rows = _math500(data_dir)
    index = NgramIndex([row["problem"] for row in rows], n=8)
    copied = rows[3]["problem"]  # "How many positive whole-number divisors does 196 have?"
    assert index.contaminated(copied)
    # Layout, case and punctuation changes do not hide a copy, nor does text around it.
    reworded = "Solve this:  " + copied.upper().replace("?", " .") + "  Show your work."
    assert index.contaminated(reworded)
    assert not index.contaminated("How many positive divisors does the number 4096 have in total, counting 1 and itself?")
    assert not index.contaminated("Tom has 3 apples and buys 7 more at the market. How many apples does Tom have now?")


def test_gsm8k_questions_do_not_overlap_math500(data_dir):
    index = build_index(DecontamConfig(sources=[str(data_dir / "math500" / "test.jsonl")], ngram=13))
    with open(data_dir / "gsm8k" / "test.jsonl") as f:
        questions = [json.loads(line)["question"] for _, line in zip(range(200), f)]
    assert index is not None and index.size == 500
    assert sum(index.contaminated(q) for q in questions) == 0
    assert sum(index.contaminated(row["problem"]) for row in _math500(data_dir)[:50]) == 50


def test_short_eval_texts_match_only_whole_copies():
    index = NgramIndex(["(7+5)*3", "((11*2)-8)*5"], n=8)
    assert index.contaminated("( 7 + 5 ) * 3")
    assert not index.contaminated("((7+5)*3)-4")  # a different, longer problem containing it
    assert not index.contaminated("(7-5)*3")  # operators are words: a different problem


def test_task_source_is_its_held_out_split():
    held_out = source_texts("task:chain")
    index = build_index(DecontamConfig(sources=["task:chain"]))
    assert len(held_out) == 256
    assert all(index.contaminated(text) for text in held_out[:20])
    assert build_index(DecontamConfig(enabled=False)) is None
    assert build_index(DecontamConfig(sources=[])) is None
