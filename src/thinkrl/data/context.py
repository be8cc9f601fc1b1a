"""The model's context limit, and what to do with a prompt that does not fit in it.

A prompt of P tokens sampled for C new tokens needs P + C positions. Past the model's
positions a RoPE model still runs and silently writes garbage (a learned-position model
crashes), so every path that renders prompts checks this first and does what
`on_long_prompt` says: skip the prompt (counted), keep its end (left-truncate), or stop.
The functions are pure: callers pass the model config, or the encode/decode functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from thinkrl.errors import ConfigError

LongPromptPolicy = Literal["skip", "truncate", "error"]
Encode = Callable[[str], list[int]]
Decode = Callable[[list[int]], str]

# transformers writes int(1e30) as model_max_length when a tokenizer names no limit; a
# real limit is far below this.
_NO_LIMIT = 10**8
_POSITION_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length")


def model_positions(config: Any = None, tokenizer: Any = None) -> int | None:
    """The positions the model attends over: its config's max_position_embeddings (or the
    same number under another name), else the tokenizer's model_max_length when it is a
    real limit rather than transformers' "none" placeholder; None when neither says."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else None
    for source in (config, text_config):
        for name in _POSITION_FIELDS:
            value = getattr(source, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < _NO_LIMIT:
        return value
    return None


@dataclass(frozen=True)
class ContextLimit:
    """The model's positions and the completion length asked for: what is left is the prompt's."""

    positions: int
    max_new_tokens: int

    @property
    def prompt_budget(self) -> int:
        return self.positions - self.max_new_tokens

    def describe(self) -> str:
        return f"the model's {self.positions} positions less {self.max_new_tokens} new tokens"


def context_limit(positions: int | None, max_new_tokens: int, setting: str = "max_new_tokens") -> ContextLimit | None:
    """The limit prompts must fit, None when the model's positions are unknown; a completion
    length that leaves no room for any prompt is a ConfigError naming `setting`."""
    if positions is None:
        return None
    if max_new_tokens >= positions:
        raise ConfigError(f"{setting}={max_new_tokens} leaves no room for a prompt in the model's {positions} "
                          f"positions; set it below {positions}")
    return ContextLimit(positions, max_new_tokens)


@dataclass
class LongPrompts:
    """What the context limit did to a prompt set: how many prompts were over it, the longest,
    and what happened to them (skipped, truncated), for the log line and the metrics."""

    source: str
    total: int
    limit: ContextLimit | None = None
    lengths_over: list[int] = field(default_factory=list)  # token counts of the prompts over the limit
    action: str = "none"  # "skipped", "truncated" or "none"

    @property
    def over(self) -> int:
        return len(self.lengths_over)

    @property
    def skipped(self) -> int:
        return self.over if self.action == "skipped" else 0

    @property
    def truncated(self) -> int:
        return self.over if self.action == "truncated" else 0

    @property
    def longest(self) -> int:
        return max(self.lengths_over, default=0)

    def summary(self) -> str:
        if not self.over or self.limit is None:
            return f"{self.source}: all {self.total} prompts fit the model's context"
        budget = self.limit.prompt_budget
        done = {"skipped": "skipped", "truncated": f"left-truncated to their last {budget} tokens"}.get(self.action, "kept")
        return (f"{self.source}: {self.over} of {self.total} prompts are longer than the {budget} tokens "
                f"{self.limit.describe()} leave (longest {self.longest}): {done}")


@dataclass
class FittedPrompts:
    """The prompts that fit the limit (indices into the input, and their text) and the report."""

    kept: list[int]
    prompts: list[str]
    report: LongPrompts


def fit_prompts(prompts: Sequence[str], encode: Encode, decode: Decode, limit: ContextLimit | None,
                policy: LongPromptPolicy, source: str, setting: str = "data.on_long_prompt") -> FittedPrompts:
    """Apply `policy` to the prompts whose tokens (as `encode` makes them, the way the engine
    will) do not leave `limit.max_new_tokens` positions: skip them, keep their end, or raise
    a ConfigError naming how many and the longest."""
    report = LongPrompts(source, len(prompts), limit)
    if limit is None:
        return FittedPrompts(list(range(len(prompts))), list(prompts), report)
    budget = limit.prompt_budget
    lengths = [len(encode(p)) for p in prompts]
    over = {i for i, n in enumerate(lengths) if n > budget}
    report.lengths_over = [lengths[i] for i in sorted(over)]
    if not over:
        return FittedPrompts(list(range(len(prompts))), list(prompts), report)
    what = f"{len(over)} of {len(prompts)} prompts are longer than the {budget} tokens {limit.describe()} leave"
    if policy == "error":
        raise ConfigError(f"{source}: {what} (longest {report.longest}); set {setting}=skip or truncate, "
                          "shorten the template or lower max_new_tokens")
    if policy == "truncate":
        report.action = "truncated"
        fitted = [left_truncate(p, encode, decode, budget) if i in over else p for i, p in enumerate(prompts)]
        return FittedPrompts(list(range(len(prompts))), fitted, report)
    if policy != "skip":
        raise ConfigError(f"{setting}='{policy}' is not one of skip, truncate, error")
    report.action = "skipped"
    if len(over) == len(prompts):
        raise ConfigError(f"{source}: every prompt is too long: {what} (longest {report.longest}); shorten the "
                          f"template (e.g. data.template=r1_zero_short), lower max_new_tokens or set {setting}=truncate")
    kept = [i for i in range(len(prompts)) if i not in over]
    return FittedPrompts(kept, [prompts[i] for i in kept], report)


def left_truncate(text: str, encode: Encode, decode: Decode, budget: int) -> str:
    """The end of `text` that `encode` makes at most `budget` tokens of: the question's end and
    the template's generation prompt stay, the start goes. Tokens `encode` adds to any text
    (a bos) are counted; a decoded cut that re-encodes longer is cut again."""
    lead = encode("")
    ids = encode(text)
    body = ids[len(lead):] if ids[:len(lead)] == lead else ids
    keep = min(budget - len(lead), len(body))
    while keep > 0:
        cut = decode(body[len(body) - keep:]).lstrip("\ufffd")  # a character split by the cut
        length = len(encode(cut))
        if length <= budget:
            return cut
        keep -= length - budget
    return ""


def prompt_encoder(tokenizer: Any) -> Encode:
    """Prompt text to ids as the rollout engines make them: no special tokens, except the bos
    a bos-using tokenizer (Llama) puts in front of text."""
    from thinkrl.rollout.transformers_engine import default_bos  # lazy: this module stays light

    bos = default_bos(tokenizer)

    def encode(text: str) -> list[int]:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        return ids

    return encode


def prompt_decoder(tokenizer: Any) -> Decode:
    """Ids back to text with special tokens written out, so a chat template's markers survive
    a cut and re-encode to themselves."""
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
