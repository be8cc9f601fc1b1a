"""The rollout protocol: every engine (transformers, vLLM, an HTTP endpoint) turns
prompts into completions the same way, so training and evaluation never care which."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


def derived_seed(seed: int, index: int) -> int:
    """A seed for item `index` (a shard, a request) that depends only on (seed, index) and
    lands far from its neighbours' (engines seed sample j of a request with seed + j)."""
    digest = hashlib.sha256(f"thinkrl-sample:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. `n` completions per prompt; temperature 0 means greedy."""

    n: int = 1
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Completion:
    """One sampled answer. Token ids are kept so training never re-tokenises text
    (re-tokenising can change the ids and silently bias the ratio)."""

    prompt_index: int
    text: str
    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    finish_reason: str = "stop"  # "stop" (eos or stop string) or "length" (truncated)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class RolloutEngine(Protocol):
    """Anything that can sample completions for a batch of already-templated prompts."""

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        """Return len(prompts) * params.n completions, grouped by prompt in order."""
        ...


@runtime_checkable
class WeightHoldingEngine(RolloutEngine, Protocol):
    """An engine with its own copy of the policy's weights (vLLM, colocated or a server): the
    trainer pushes every update into it and lends it the accelerator's memory in turns."""

    def sync_weights(self, model: Any) -> int:
        """Load the policy's current weights; returns the bytes sent."""
        ...

    def sleep(self) -> None:
        """Free memory (KV cache, maybe weights) while the trainer needs it."""
        ...

    def wake_up(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None:
        """Take the memory back before generating."""
        ...


def holds_own_weights(engine: Any) -> bool:
    """True for an engine that samples from its own copy of the weights (so it must be
    synced), False for one that samples from the training model itself."""
    return isinstance(engine, WeightHoldingEngine)
