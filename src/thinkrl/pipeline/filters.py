"""Readability filters of R1's rejection sampling (stage 3): drop answers with mixed
languages, overlong paragraphs, code blocks where no code was asked for, or a broken
`<think>` layout, and exact duplicates of an answer already kept for the same prompt.

Each filter is a pure function `(text, example, **thresholds) -> reason | None`: the short
reason code is what `dropped.jsonl` and the report count, None means the text passes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import Field, field_validator

from thinkrl.config import Config
from thinkrl.data.example import Example
from thinkrl.rewards.formats import format_r1
from thinkrl.rewards.language import LATIN_LANGUAGES, SCRIPTS, language_consistency

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_SPACE = re.compile(r"\s+")


class FilterConfig(Config):
    """Which readability filters run on every sampled answer, and their thresholds."""

    language: str | None = Field(
        "en", description="target language of the chain of thought (en, zh, fr, ...); null turns the filter off"
    )
    min_language_share: float = Field(
        0.95, ge=0, le=1, description="drop an answer when less than this share of its chain-of-thought words is "
        "in the target language (math, code and numbers do not count)"
    )
    max_paragraph_chars: int | None = Field(
        2000, ge=1, description="drop an answer with a paragraph (text between blank lines) longer than this; null: off"
    )
    no_code_in_non_code: bool = Field(True, description="drop answers holding a ``` code block when the prompt is not a code task")
    require_format: bool = Field(True, description="keep only R1's layout: <think> reasoning </think> then a non-empty answer")
    drop_truncated: bool = Field(True, description="drop answers cut off by max_new_tokens (they never finished)")
    dedup: bool = Field(True, description="drop an answer identical to an earlier one for the same prompt (case and whitespace ignored)")
    max_per_prompt: int | None = Field(
        None, ge=1, description="keep at most this many answers per prompt (the first ones that pass); null: no cap"
    )

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        known = sorted({*LATIN_LANGUAGES, *SCRIPTS})
        if value is not None and value not in known:
            raise ValueError(f"unknown language '{value}'; known: {', '.join(known)}")
        return value


def empty(text: str, example: Example) -> str | None:
    """An answer with nothing in it teaches nothing."""
    return "empty" if not text.strip() else None


def mixed_language(text: str, example: Example, language: str = "en", min_share: float = 0.95) -> str | None:
    """R1's language-mixing filter: too small a share of the chain of thought in `language`."""
    return "mixed_language" if language_consistency(text, example, language).score < min_share else None


def long_paragraph(text: str, example: Example, max_chars: int = 2000) -> str | None:
    """A wall of text without a break is hard to read (R1 drops long paragraphs)."""
    if any(len(part.strip()) > max_chars for part in _PARAGRAPH_BREAK.split(text)):
        return "long_paragraph"
    return None


def code_block(text: str, example: Example) -> str | None:
    """A fenced code block in the answer to a non-code prompt (R1 drops those)."""
    if example.kind != "code" and "```" in text:
        return "code_block"
    return None


def bad_format(text: str, example: Example) -> str | None:
    """The R1 layout check of `format_r1`; its own reason code says what is wrong."""
    result = format_r1(text, example)
    return None if result.score >= 1.0 else result.reason


def first_problem(text: str, example: Example, cfg: FilterConfig) -> str | None:
    """The reason of the first enabled filter that rejects `text`, cheapest first; None: it passes."""
    reason = empty(text, example)
    if reason is None and cfg.require_format:
        reason = bad_format(text, example)
    if reason is None and cfg.no_code_in_non_code:
        reason = code_block(text, example)
    if reason is None and cfg.max_paragraph_chars is not None:
        reason = long_paragraph(text, example, cfg.max_paragraph_chars)
    if reason is None and cfg.language is not None:
        reason = mixed_language(text, example, cfg.language, cfg.min_language_share)
    return reason


def dedup_key(text: str) -> str:
    """What two answers must share to count as the same: the text, case and whitespace ignored."""
    return _SPACE.sub(" ", text).strip().casefold()


def duplicates(texts: Sequence[str]) -> list[bool]:
    """For each text, whether an earlier one in `texts` has the same `dedup_key`."""
    seen: set[str] = set()
    flags = []
    for text in texts:
        key = dedup_key(text)
        flags.append(key in seen)
        seen.add(key)
    return flags
