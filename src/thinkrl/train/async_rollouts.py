"""GRPO with bounded staleness (`rollout.max_staleness: k`): the rollouts of step s + k are
generated, by the sampler process, while the trainer trains step s.

Step s is sampled by the policy after max(0, s - 1 - k) updates: the first k + 1 steps by the
starting weights, then every step k updates behind the trainer. Which prompts and seeds a
step uses does not depend on the weights, so the calls are known ahead (`step_calls`); the
loop itself is unchanged and asks its engine (a `PrefetchedEngine`) for them as usual. A
checkpoint stores the generations in flight (waiting for them first), so `--resume`
continues exactly as the unbroken run would.
"""

from __future__ import annotations

from typing import Any

from thinkrl.errors import ConfigError
from thinkrl.rollout.async_sampler import AsyncSampler, PrefetchedEngine, answers_from_state, answers_state
from thinkrl.train.rollouts import PromptOrder, generation_calls, step_params


def check_async(cfg, world: int) -> None:
    """What asynchronous rollouts support today: one process, the transformers engine, and
    a prompt order that does not depend on the results (no curriculum)."""
    if not cfg.rollout.max_staleness:
        return
    if world > 1:
        raise ConfigError("rollout.max_staleness > 0 runs in one process for now (its sampler is one process); "
                          "under accelerate launch use max_staleness=0")
    if cfg.rollout.engine != "transformers":
        raise ConfigError("rollout.max_staleness > 0 needs rollout.engine=transformers (the sampler process runs "
                          "thinkrl's decoder on its own copy of the weights)")
    if cfg.algo.curriculum != "none":
        raise ConfigError("rollout.max_staleness > 0 draws prompts ahead of the results; algo.curriculum=pass_rate "
                          "needs them: use one or the other")


def step_calls(cfg, prompts: list[str], order: PromptOrder, step: int) -> list[tuple[tuple[str, ...], Any]]:
    """The engine calls step `step`'s first rollout round makes (one process)."""
    total = cfg.rollout.prompts_per_step
    index = order.take((step - 1) * total, total)
    block = max(1, cfg.rollout.batch_size // cfg.rollout.group_size)
    calls = generation_calls([prompts[i] for i in index], step_params(cfg, step, 0), block=block)
    return [(tuple(part), params) for _, part, params in calls]


class Prefetcher:
    """Keeps the sampler k steps ahead of the trainer."""

    def __init__(self, cfg, prompts: list[str], order: PromptOrder, model_path: str, tokenizer_path: str | None) -> None:
        self.cfg, self.prompts, self.order = cfg, prompts, order
        self.k = cfg.rollout.max_staleness
        self.sampler = AsyncSampler(model_path, tokenizer_path, cfg.rollout.batch_size, cfg.rollout.sampler_threads)
        self.engine = PrefetchedEngine(self.sampler)
        self.submitted: set[int] = set()
        self.loaded = -1  # the version the sampler holds
        self.waited = 0.0

    def start(self, model: Any, start_step: int, restored: dict[str, list] | None) -> None:
        """Give the sampler the current weights; hold the generations a checkpoint saved."""
        for step, rows in (restored or {}).items():
            for call, answer in zip(step_calls(self.cfg, self.prompts, self.order, int(step)), answers_from_state(rows)):
                self.sampler.hold(call, answer)
            self.submitted.add(int(step))
        self._load(model, start_step)
        for step in range(start_step + 1, min(start_step + self.k, self.cfg.run.steps) + 1):
            self._submit(step)

    def before_step(self, model: Any, step: int) -> None:
        """The trainer is at step `step` with `step - 1` updates applied: ask for step + k."""
        if step + self.k <= self.cfg.run.steps:
            self._load(model, step - 1)
            self._submit(step + self.k)

    def metrics(self, step: int) -> dict[str, float]:
        served = self.engine.take_served()
        waited, self.waited = self.sampler.waited_s - self.waited, self.sampler.waited_s
        if not served:
            return {}
        staleness = [step - 1 - a.version for a in served]
        return {"async/staleness_max": max(staleness), "async/staleness_mean": sum(staleness) / len(staleness),
                "async/trainer_wait_s": waited, "async/sampler_busy_s": sum(a.seconds for a in served)}

    def in_flight(self, step: int) -> dict[str, list]:
        """The generations submitted for steps after `step`, waited for and kept (they stay
        held for this run), as checkpoint state."""
        state = {}
        for later in sorted(s for s in self.submitted if s > step):
            answers = []
            for call in step_calls(self.cfg, self.prompts, self.order, later):
                answer = self.sampler.take(call)
                self.sampler.hold(call, answer)
                answers.append(answer)
            state[str(later)] = answers_state(answers)
        return state

    def close(self) -> None:
        self.sampler.close()

    def _load(self, model: Any, version: int) -> None:
        if version != self.loaded:
            self.sampler.load(model, version)
            self.loaded = version

    def _submit(self, step: int) -> None:
        if step not in self.submitted:
            self.sampler.submit(step_calls(self.cfg, self.prompts, self.order, step))
            self.submitted.add(step)
