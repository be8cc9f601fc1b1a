"""What every reward returns and the registry that finds rewards by name.

A reward is a plain function `(completion, example, **options) -> RewardResult`, so adding
one is writing a function and decorating it with `@register("name")`. Each result says *why*
(a short reason code such as `correct`, `no_answer`, `format_order`), so logs can show what
the policy is actually doing, not only a mean.

Facts only the sampler knows (the completion's token ids, their count) are not options: a
reward asks for one by naming it as a keyword parameter (`completion_tokens: int | None = None`,
see CONTEXT_KEYS), and the batch scorer passes it to that reward alone, when it is known.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from thinkrl.data.example import Example
from thinkrl.errors import ConfigError


@dataclass(frozen=True)
class RewardResult:
    """A score and the reason code for it (`correct`, `wrong`, `no_answer`, `timeout`, ...)."""

    score: float
    reason: str


RewardFn = Callable[[str, Example], RewardResult]

# Whether a (completion, example) pair must be scored in a worker process (untrusted parsing
# that can hang, or a sandbox run) or may be scored in the caller (cheap, bounded work).
IsolateRule = bool | Callable[[str, Example, Mapping[str, Any]], bool]


# Per-completion facts the scorer supplies when it has them (the trainer always does):
# `completion_ids` (the sampled token ids, eos included) and `completion_tokens` (their count).
CONTEXT_KEYS = ("completion_ids", "completion_tokens")


def context_params(fn: Callable[..., RewardResult]) -> frozenset[str]:
    """The CONTEXT_KEYS `fn` names as keyword parameters; `**options` alone asks for none,
    so rewards that forward their options never receive facts they did not ask for."""
    params = inspect.signature(fn).parameters
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return frozenset(key for key in CONTEXT_KEYS if key in params and params[key].kind in kinds)


@dataclass(frozen=True)
class RewardEntry:
    name: str
    fn: Callable[..., RewardResult]
    isolate: IsolateRule
    context: frozenset[str] = frozenset()  # the CONTEXT_KEYS the reward takes

    def needs_worker(self, completion: str, example: Example, options: Mapping[str, Any]) -> bool:
        rule = self.isolate
        return bool(rule(completion, example, options)) if callable(rule) else bool(rule)


_REGISTRY: dict[str, RewardEntry] = {}


def register(name: str, *, isolate: IsolateRule = True) -> Callable[[Callable[..., RewardResult]], Callable[..., RewardResult]]:
    """Decorator: make a reward function available by `name` in reward specs.

    `isolate` says whether the batch scorer runs it in a worker process with a hard timeout
    (the safe default for anything that parses model output) or inline in the caller (for
    cheap checks such as tags); it may be a function of (completion, example, options).

    Inline, nothing can stop a reward (a regex holds the GIL), and the policy's text is
    adversarial: RL finds any input that makes a grader slow. So `isolate=False` is a promise
    that the work is linear in the completion's length whatever the text (`str.find`/`count`,
    single-pass scans, regexes without overlapping unbounded quantifiers, never a lazy `.*?`
    between two different delimiters) and bounded in size (a cap on the text scored or sent).
    Work that cannot promise that goes to the pool, where a timeout kills it and scores 0.
    """

    def add(fn: Callable[..., RewardResult]) -> Callable[..., RewardResult]:
        old = _REGISTRY.get(name)
        if old is not None and (old.fn.__module__, old.fn.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"reward '{name}' is already registered by {old.fn.__module__}.{old.fn.__qualname__}")
        _REGISTRY[name] = RewardEntry(name=name, fn=fn, isolate=isolate, context=context_params(fn))
        return fn

    return add


def reward_names() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> RewardEntry:
    """The registry entry for `name`; an unknown name is a ConfigError naming the closest one."""
    try:
        return _REGISTRY[name]
    except KeyError:
        pass
    match = difflib.get_close_matches(name, list(_REGISTRY), n=1, cutoff=0.5)
    hint = f" (did you mean '{match[0]}'?)" if match else ""
    raise ConfigError(f"unknown reward '{name}'{hint}; valid rewards: {', '.join(reward_names())}")


def get_reward(name: str) -> Callable[..., RewardResult]:
    """The reward function registered as `name`: call it as `fn(completion, example, **options)`."""
    return get_entry(name).fn
