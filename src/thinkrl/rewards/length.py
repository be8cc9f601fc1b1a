"""Length shaping, off unless named in the spec.

`overlong` is DAPO's soft overlong punishment: 0 up to `max_len - cache`, then falling
linearly to -1 at `max_len`, and -1 beyond, so truncated rambling is discouraged without a
cliff. `cosine_length` (Yeo et al. 2025) makes correct answers worth more when short and
wrong answers less bad when long (think more when unsure), on a cosine schedule.
Length is in characters, or in tokens when a count is given (`tokens` option,
`example.meta["completion_tokens"]`) or a tokenizer path is named.
"""

from __future__ import annotations

import functools
import math

from thinkrl.data.example import Example
from thinkrl.rewards.accuracy import _accuracy_needs_worker, accuracy
from thinkrl.rewards.base import RewardResult, register


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def completion_length(completion: str, example: Example, tokens: int | None = None, tokenizer: str | None = None) -> int:
    """Tokens when known (option, example.meta, tokenizer), else characters."""
    if tokens is not None:
        return int(tokens)
    counted = (example.meta or {}).get("completion_tokens")
    if counted is not None:
        return int(counted)
    if tokenizer:
        return len(_tokenizer(tokenizer)(completion, add_special_tokens=False)["input_ids"])
    return len(completion)


def overlong_penalty(length: int, max_len: int, cache: int) -> float:
    """DAPO's soft overlong punishment in [-1, 0]."""
    if cache <= 0 or cache > max_len:
        raise ValueError(f"overlong cache must be in 1..max_len ({max_len}), got {cache}")
    if length <= max_len - cache:
        return 0.0
    if length <= max_len:
        return (max_len - cache - length) / cache
    return -1.0


def cosine_value(length: int, max_len: int, at_zero: float, at_max: float) -> float:
    """Cosine interpolation from `at_zero` (length 0) to `at_max` (length max_len)."""
    t = min(max(length / max_len, 0.0), 1.0)
    return at_max + 0.5 * (at_zero - at_max) * (1.0 + math.cos(math.pi * t))


@register("overlong", isolate=False)
def overlong(completion: str, example: Example, max_len: int = 4096, cache: int = 512,
             tokens: int | None = None, tokenizer: str | None = None) -> RewardResult:
    """0 for short enough completions, down to -1 over the last `cache` units before `max_len`."""
    length = completion_length(completion, example, tokens, tokenizer)
    score = overlong_penalty(length, max_len, cache)
    return RewardResult(score, "within_length" if score == 0 else ("overlong" if score == -1.0 else "near_limit"))


@register("cosine_length", isolate=lambda c, e, o: _accuracy_needs_worker(c, e, o.get("accuracy_options", {})))
def cosine_length(completion: str, example: Example, max_len: int = 4096, correct_short: float = 1.0,
                  correct_long: float = 0.5, wrong_short: float = -0.5, wrong_long: float = 0.0,
                  exceed: float = -1.0, tokens: int | None = None, tokenizer: str | None = None,
                  accuracy_options: dict | None = None) -> RewardResult:
    """Accuracy shaped by length: use it in place of `accuracy`, not beside it."""
    length = completion_length(completion, example, tokens, tokenizer)
    if length > max_len:
        return RewardResult(exceed, "overlong")
    verdict = accuracy(completion, example, **(accuracy_options or {}))
    if verdict.score >= 1.0:
        return RewardResult(cosine_value(length, max_len, correct_short, correct_long), "correct")
    return RewardResult(cosine_value(length, max_len, wrong_short, wrong_long), verdict.reason)
