"""Length shaping, off unless named in the spec.

`overlong` is DAPO's soft overlong punishment: 0 up to `max_len - cache`, then falling
linearly to -1 at `max_len`, and -1 beyond, so truncated rambling is discouraged without a
cliff. `cosine_length` (Yeo et al. 2025) makes correct answers worth more when short and
wrong answers less bad when long (think more when unsure), on a cosine schedule.

`max_len` and `cache` are in tokens (`unit: tokens`, the default), as DAPO and
`rollout.max_new_tokens` mean. The length is, first found: the count of token ids the policy
generated (eos included), which the trainer passes as `completion_tokens`; the example's
`meta.completion_tokens` (rows of `thinkrl reward`); the text re-tokenised with the
`tokenizer` option (a folder or hub id: name the policy's). With none of these the reward
fails (scores 0 as a logged error) rather than guess. `unit: chars` counts characters
instead, always, even in training, and says so once in the log: units are never mixed.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Literal

from thinkrl.data.example import Example
from thinkrl.errors import ConfigError
from thinkrl.rewards.accuracy import _accuracy_needs_worker, accuracy
from thinkrl.rewards.base import RewardResult, register

log = logging.getLogger(__name__)

Unit = Literal["tokens", "chars"]
UNITS = ("tokens", "chars")


@functools.lru_cache(maxsize=4)
def _tokenizer(name_or_path: str) -> Any:
    from thinkrl.models import load_tokenizer

    return load_tokenizer(name_or_path)


@functools.cache
def _say_chars_once(reward: str) -> None:
    log.warning("reward %s counts characters (unit: chars), not tokens: its max_len and cache are in characters", reward)


def completion_length(completion: str, example: Example, unit: Unit = "tokens", completion_tokens: int | None = None,
                      tokenizer: str | None = None, reward: str = "length") -> int:
    """The completion's length in `unit`; tokens from the sampler's count, the example's meta,
    or a tokenizer, in that order, and an error when none is at hand (never characters)."""
    if unit == "chars":
        if tokenizer:
            raise ConfigError(f"reward '{reward}': option tokenizer counts tokens, but unit is chars; drop one")
        _say_chars_once(reward)
        return len(completion)
    if unit != "tokens":
        raise ConfigError(f"reward '{reward}': unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if completion_tokens is not None:
        return int(completion_tokens)
    counted = (example.meta or {}).get("completion_tokens")
    if counted is not None:
        return int(counted)
    if tokenizer:
        return len(_tokenizer(tokenizer)(completion, add_special_tokens=False)["input_ids"])
    raise ConfigError(f"reward '{reward}' counts tokens (max_len is in tokens) but has no token count here: "
                      "set its option tokenizer (the policy's tokenizer folder or hub id), or unit: chars")


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
def overlong(completion: str, example: Example, max_len: int = 4096, cache: int = 512, unit: Unit = "tokens",
             tokenizer: str | None = None, completion_tokens: int | None = None) -> RewardResult:
    """0 up to `max_len - cache` tokens, down to -1 at `max_len` tokens (`unit: chars`: characters)."""
    length = completion_length(completion, example, unit, completion_tokens, tokenizer, reward="overlong")
    score = overlong_penalty(length, max_len, cache)
    return RewardResult(score, "within_length" if score == 0 else ("overlong" if score == -1.0 else "near_limit"))


@register("cosine_length", isolate=lambda c, e, o: _accuracy_needs_worker(c, e, o.get("accuracy_options", {})))
def cosine_length(completion: str, example: Example, max_len: int = 4096, correct_short: float = 1.0,
                  correct_long: float = 0.5, wrong_short: float = -0.5, wrong_long: float = 0.0,
                  exceed: float = -1.0, unit: Unit = "tokens", tokenizer: str | None = None,
                  accuracy_options: dict | None = None, completion_tokens: int | None = None) -> RewardResult:
    """Accuracy shaped by length in tokens (`unit: chars`: characters), `exceed` past `max_len`:
    use it in place of `accuracy`, not beside it."""
    length = completion_length(completion, example, unit, completion_tokens, tokenizer, reward="cosine_length")
    if length > max_len:
        return RewardResult(exceed, "overlong")
    verdict = accuracy(completion, example, **(accuracy_options or {}))
    if verdict.score >= 1.0:
        return RewardResult(cosine_value(length, max_len, correct_short, correct_long), "correct")
    return RewardResult(cosine_value(length, max_len, wrong_short, wrong_long), verdict.reason)
