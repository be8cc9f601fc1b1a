"""Prompt templates: the paper's R1-Zero text, its short form, and a real tokenizer's chat template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from thinkrl.data.example import Example
from thinkrl.data.templates import R1_ZERO_TEMPLATE, prompt_prefills_think, render_prompt
from thinkrl.errors import ConfigError

MATH = Example(prompt="What is 2+3?", answer="5")
CODE = Example(prompt='def add(a, b):\n    """Add two numbers."""\n', kind="code", tests="assert add(1, 2) == 3")


@pytest.fixture(scope="module")
def qwen(qwen_tokenizer_dir):
    return AutoTokenizer.from_pretrained(qwen_tokenizer_dir)


def test_r1_zero_is_the_papers_template_around_the_question() -> None:
    text = render_prompt(MATH, "r1_zero")
    assert text.startswith("A conversation between User and Assistant.")
    assert "<think> </think> and <answer> </answer> tags" in text
    assert text.endswith("User: What is 2+3?. Assistant:")
    assert text == R1_ZERO_TEMPLATE.format(prompt="What is 2+3?")


def test_r1_zero_short_is_its_last_line() -> None:
    assert render_prompt(MATH, "r1_zero_short") == "User: What is 2+3?. Assistant:"
    assert R1_ZERO_TEMPLATE.endswith(" User: {prompt}. Assistant:")


def test_plain_keeps_a_code_prompt_byte_for_byte() -> None:
    assert render_prompt(CODE, "plain") == CODE.prompt
    assert render_prompt(MATH, "plain", system_prompt="Be brief.") == "Be brief.\nWhat is 2+3?"


def test_chat_uses_the_tokenizers_template(qwen) -> None:
    text = render_prompt(MATH, "chat", qwen)
    assert "<|im_start|>user\nWhat is 2+3?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    with_system = render_prompt(MATH, "chat", qwen, system_prompt="Think step by step.")
    assert with_system.startswith("<|im_start|>system\nThink step by step.<|im_end|>")
    assert not prompt_prefills_think(text)


def test_chat_without_a_template_or_tokenizer_is_a_clear_error(qwen, monkeypatch) -> None:
    monkeypatch.setattr(qwen, "chat_template", None)
    with pytest.raises(ConfigError, match="has no chat template"):
        render_prompt(MATH, "chat", qwen)
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        render_prompt(MATH, "chat", None)
    with pytest.raises(ConfigError, match="unknown prompt template 'fancy'"):
        render_prompt(MATH, "fancy")


def test_prefilled_think_is_detected_from_the_rendered_prompt(qwen, monkeypatch) -> None:
    # What R1-distilled chat templates do: open the reasoning block for the model.
    monkeypatch.setattr(qwen, "chat_template", (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
    ))
    assert prompt_prefills_think(render_prompt(MATH, "chat", qwen))
    assert not prompt_prefills_think(render_prompt(MATH, "r1_zero"))  # mentions <think> </think> mid-text
    assert not prompt_prefills_think("Assistant: <think> done </think>")
    assert prompt_prefills_think("Assistant: <think>")
