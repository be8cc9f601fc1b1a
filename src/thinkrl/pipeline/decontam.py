"""Decontamination: keep evaluation problems out of SFT data by word n-gram overlap.

A prompt is contaminated when it shares a run of `n` words with any evaluation text.
Texts are normalised first (case folded, punctuation and spacing dropped) so a copy that
differs only in layout is still caught. Arithmetic operators count as words: `7+5` and
`7-5` are different problems. An evaluation text shorter than `n` words has no n-gram:
it catches a prompt only when the prompt is that text, whole (short synthetic problems
often appear inside longer, different ones, e.g. `(7+5)*3` inside `((7+5)*3)-4`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import Field

from thinkrl.config import Config
from thinkrl.data.config import DataConfig

_TOKEN = re.compile(r"[^\W_]+|[+\-*/=^<>]")


class DecontamConfig(Config):
    """Which evaluation sets the sampled prompts must not overlap, and how overlap is measured."""

    enabled: bool = Field(True, description="drop prompts that overlap an evaluation set before sampling them")
    sources: list[str] = Field(
        ["task:chain"], description="evaluation sets: data files or folders (.jsonl/.json/.parquet, preset auto) or "
        "task:NAME (the task's held-out split)"
    )
    ngram: int = Field(8, ge=1, description="words in a shared run that makes a prompt contaminated")


def words(text: str) -> list[str]:
    """The normalised words of `text`: lower case, punctuation and whitespace gone, operators kept."""
    return _TOKEN.findall(text.casefold())


def _grams(tokens: list[str], n: int) -> Iterable[tuple[str, ...]]:
    return (tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


class NgramIndex:
    """The word n-grams of a set of texts (e.g. an evaluation set), for overlap checks."""

    def __init__(self, texts: Iterable[str], n: int = 8) -> None:
        if n < 1:
            raise ValueError(f"n-gram size must be >= 1, got {n}")
        self.n = n
        self._grams: set[tuple[str, ...]] = set()
        self._short: set[tuple[str, ...]] = set()  # texts under n words, matched whole
        self.size = 0
        for text in texts:
            tokens = words(text)
            if not tokens:
                continue
            self.size += 1
            if len(tokens) < n:
                self._short.add(tuple(tokens))
            else:
                self._grams.update(_grams(tokens, n))

    def contaminated(self, text: str) -> bool:
        """Whether `text` shares an n-gram with the indexed texts, or is one of the short ones."""
        tokens = words(text)
        if len(tokens) < self.n:
            return tuple(tokens) in self._short
        return any(gram in self._grams for gram in _grams(tokens, self.n))


def source_texts(source: str) -> list[str]:
    """The questions of one evaluation source (a data file/folder or task:NAME's held-out split)."""
    from thinkrl.data.loaders import (
        load_examples,  # lazy: only runs that decontaminate read eval sets
    )

    return [example.prompt for example in load_examples(DataConfig(path=source))]


def build_index(cfg: DecontamConfig) -> NgramIndex | None:
    """The index of every source in `cfg`, or None when decontamination is off or has no sources."""
    if not cfg.enabled or not cfg.sources:
        return None
    return NgramIndex((text for source in cfg.sources for text in source_texts(source)), cfg.ngram)
