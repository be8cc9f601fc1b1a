"""Prompt templates: how an Example's question becomes the text the policy continues.

R1-Zero needs no chat format: a base model continues the paper's template and learns the
`<think>`/`<answer>` structure from the format reward. `r1_zero_short` keeps only the last
line, what the tiny character-level model is pretrained on. `chat` defers to the tokenizer's
own template for instruct/distilled models; some of those pre-fill an opened `<think>`,
which the format reward must know about (`prompt_prefills_think`).
"""

from __future__ import annotations

import re
from typing import Any

from thinkrl.data.example import Example
from thinkrl.errors import ConfigError

# The R1-Zero template, verbatim from the paper (see docs/recipe.md); {prompt} is the question.
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process "
    "here </think> <answer> answer here </answer>. User: {prompt}. Assistant:"
)
R1_ZERO_SHORT_TEMPLATE = "User: {prompt}. Assistant:"

TEMPLATES = ("r1_zero", "r1_zero_short", "chat", "plain")


def _question(example: Example) -> str:
    # A trailing period would double up with the template's "{prompt}." ending.
    return example.prompt.strip()


def _with_system(text: str, system_prompt: str | None) -> str:
    return f"{system_prompt.strip()}\n{text}" if system_prompt else text


def render_chat(question: str, tokenizer: Any, system_prompt: str | None = None) -> str:
    """The tokenizer's chat template for one user turn, ready for the assistant to answer."""
    if tokenizer is None:
        raise ConfigError("data.template=chat needs a tokenizer (the model's own chat template)")
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ConfigError(
            f"tokenizer '{name}' has no chat template; use data.template=r1_zero or r1_zero_short for a base model"
        )
    messages = [{"role": "user", "content": question}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def render_prompt(example: Example, template: str, tokenizer: Any = None, system_prompt: str | None = None) -> str:
    """The prompt text for `example` under `template` (one of TEMPLATES)."""
    question = _question(example)
    if template == "r1_zero":
        return _with_system(R1_ZERO_TEMPLATE.format(prompt=question), system_prompt)
    if template == "r1_zero_short":
        return _with_system(R1_ZERO_SHORT_TEMPLATE.format(prompt=question), system_prompt)
    if template == "chat":
        return render_chat(question, tokenizer, system_prompt)
    if template == "plain":
        # Code prompts end in a signature plus docstring; keep their indentation and newline.
        return _with_system(example.prompt if example.kind == "code" else question, system_prompt)
    raise ConfigError(f"unknown prompt template '{template}'; valid templates: {', '.join(TEMPLATES)}")


_OPEN_THINK_AT_END = re.compile(r"<think>\s*$")


def prompt_prefills_think(prompt: str) -> bool:
    """Whether the prompt ends inside an opened `<think>` (some chat templates add it), so the
    completion starts mid-reasoning and carries only the closing tag."""
    return bool(_OPEN_THINK_AT_END.search(prompt))
