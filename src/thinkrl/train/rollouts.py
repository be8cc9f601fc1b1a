"""One GRPO rollout: sample G completions per prompt, score them, turn scores into advantages.

Dynamic sampling (DAPO) lives here too: groups whose rewards all agree carry no learning
signal, so they can be dropped and replaced by fresh prompts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import torch

from thinkrl.data.example import Example
from thinkrl.rewards import RewardScores, RewardTerm
from thinkrl.rewards.routing import score_routed
from thinkrl.rollout.base import Completion, RolloutEngine, SamplingParams


@dataclass
class Rollout:
    """A rollout batch, group by group: completions[i*G:(i+1)*G] answer examples[i]."""

    examples: list[Example]
    completions: list[Completion]
    rewards: torch.Tensor  # [B] total reward (after any control shuffle)
    advantages: torch.Tensor  # [B]
    scores: RewardScores
    group_size: int
    groups_sampled: int = 0  # groups generated, including those dynamic sampling dropped
    zero_variance_groups: int = 0  # among the groups sampled
    generated_tokens: int = 0
    group_pass: list[tuple[int, float]] = field(default_factory=list)  # (prompt index, pass rate), every group sampled
    extra: dict = field(default_factory=dict)


class PromptOrder:
    """A reproducible stream of prompt indices: epoch e is a permutation seeded by (seed, e),
    so step s always sees the same prompts, whether or not the run was resumed."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed

    def take(self, start: int, count: int) -> list[int]:
        out = []
        for position in range(start, start + count):
            epoch, offset = divmod(position, self.size)
            out.append(self._permutation(epoch)[offset])
        return out

    def _permutation(self, epoch: int) -> list[int]:
        if getattr(self, "_cached_epoch", None) != epoch:
            order = list(range(self.size))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._cached_epoch, self._cached = epoch, order
        return self._cached


def step_params(cfg, step: int, round_: int = 0) -> SamplingParams:
    """How step `step` samples in rollout round `round_` (GRPOConfig `cfg`): seeded by both,
    so a resumed or asynchronous run samples what the plain run samples."""
    return SamplingParams(n=cfg.rollout.group_size, max_new_tokens=cfg.rollout.max_new_tokens,
                          temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                          seed=cfg.run.seed * 1_000_003 + step * 101 + round_)


def sample_and_score(engine: RolloutEngine, prompts: list[str], examples: list[Example], params: SamplingParams,
                     terms: list[RewardTerm], reward_workers: int,
                     terms_by_kind: dict[str, list[RewardTerm]] | None = None,
                     block: int | None = None, first_prompt: int = 0) -> tuple[list[Completion], RewardScores]:
    """Sample `params.n` completions per prompt and score them (each kind with its own spec).

    Generation goes in blocks of `block` prompts, block b seeded with params.seed + 7*b where
    b counts from the step's first prompt (`first_prompt` is this process's offset in it), so
    the samples of a prompt do not depend on how the step's prompts are split over processes.
    """
    completions: list[Completion] = []
    for start, part_prompts, part_params in generation_calls(prompts, params, block, first_prompt):
        part = engine.generate(part_prompts, part_params)
        for c in part:
            c.prompt_index += start
        completions += part
    repeated = [examples[c.prompt_index] for c in completions]
    scores = score_routed([c.text for c in completions], repeated, terms, terms_by_kind or {}, workers=reward_workers,
                          completion_ids=[sampled_ids(c) for c in completions])
    return completions, scores


def generation_calls(prompts: list[str], params: SamplingParams, block: int | None = None,
                     first_prompt: int = 0) -> list[tuple[int, list[str], SamplingParams]]:
    """The engine calls `sample_and_score` makes: (offset, prompts, params) per block, block b
    seeded with params.seed + 7*b (b counted from the step's first prompt). An asynchronous
    sampler is asked for exactly these ahead of time."""
    block = block or max(len(prompts), 1)
    calls = []
    for start in range(0, len(prompts), block):
        seed = None if params.seed is None else params.seed + 7 * ((first_prompt + start) // block)
        calls.append((start, prompts[start:start + block], replace(params, seed=seed)))
    return calls


def sampled_ids(completion: Completion) -> list[int] | None:
    """The completion's generated token ids for the rewards (length counts tokens, as DAPO
    means), or None where the engine kept none for a non-empty text (an HTTP endpoint)."""
    if completion.completion_ids or not completion.text:
        return list(completion.completion_ids)
    return None


def shuffle_within_groups(rewards: torch.Tensor, group_size: int, generator: torch.Generator) -> torch.Tensor:
    """The control run: same reward values, assigned to random members of their group, so any
    gain it shows is not the reward's doing."""
    groups = rewards.view(-1, group_size)
    perms = torch.stack([torch.randperm(group_size, generator=generator) for _ in range(groups.shape[0])])
    return torch.gather(groups, 1, perms).reshape(-1)


def zero_variance(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[num_groups] bool: True where every completion of the group got the same reward."""
    groups = rewards.view(-1, group_size)
    return (groups.max(dim=1).values - groups.min(dim=1).values).abs() < 1e-9
