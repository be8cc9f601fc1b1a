"""What an evaluation measures beyond accuracy: the behaviours R1-Zero was seen to grow
(a scratchpad, longer answers, reflection words such as "wait"), as pure functions of text.
"""

from __future__ import annotations

import re
from collections import Counter

# One label per reflective habit; each pattern also takes the word's inflections
# ("verified", "checking"), but not compounds it is part of ("double-check" is its own label).
REFLECTION_PATTERNS: dict[str, str] = {
    "wait": r"wait",
    "hmm": r"hmm+",
    "verify": r"verif(?:y|ies|ied|ying|ication)",
    "check": r"(?<!double )check(?:s|ed|ing)?",
    "double-check": r"double[- ]check(?:s|ed|ing)?",
    "re-evaluate": r"re-?evaluat(?:e|es|ed|ing|ion)",
    "reconsider": r"reconsider(?:s|ed|ing)?",
    "mistake": r"mistakes?",
    "alternatively": r"alternatively",
}
_REFLECTION = {label: re.compile(rf"(?<![\w-]){pattern}(?![\w-])", re.IGNORECASE)
               for label, pattern in REFLECTION_PATTERNS.items()}
_SCRATCHPAD = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def reflection_counts(text: str) -> Counter[str]:
    """How often each reflection word occurs in a response (case-insensitive, whole words)."""
    return Counter({label: n for label, rx in _REFLECTION.items() if (n := len(rx.findall(text)))})


def uses_scratchpad(text: str) -> bool:
    """True when the response thinks in a `<think> ... </think>` block with something in it."""
    return any(body.strip() for body in _SCRATCHPAD.findall(text))


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
