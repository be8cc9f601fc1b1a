"""Rewards routed by an example's kind, for RL over mixed prompt sets (R1 stage 4):
math and code answers get rule rewards, general prompts a reward model or an LLM judge.

Each kind is scored with its own spec; the batch's scores are merged so every reward name
has a value for every sample. A reward that does not apply to a sample's kind scores 0
with reason `n/a`, which metrics leave out of that reward's mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from thinkrl.data.example import Example
from thinkrl.rewards.scoring import RewardScores, score_completions
from thinkrl.rewards.spec import RewardTerm

NOT_APPLICABLE = "n/a"


def score_routed(completions: Sequence[str], examples: Sequence[Example], default: Sequence[RewardTerm],
                 by_kind: Mapping[str, Sequence[RewardTerm]], workers: int = 2,
                 completion_ids: Sequence[Sequence[int] | None] | None = None) -> RewardScores:
    """Score every completion with the spec of its example's kind (`by_kind`, else `default`);
    `completion_ids` go along to score_completions, split the same way."""
    if not by_kind:
        return score_completions(completions, examples, default, workers=workers, completion_ids=completion_ids)
    groups: dict[str, list[int]] = {}
    for i, example in enumerate(examples):
        key = example.kind if example.kind in by_kind else ""
        groups.setdefault(key, []).append(i)
    n = len(completions)
    total = [0.0] * n
    by_name: dict[str, list[float]] = {}
    reasons: dict[str, list[str]] = {}
    errors = timeouts = 0
    for key, index in groups.items():
        spec = by_kind[key] if key else default
        ids: list[Any] | None = None if completion_ids is None else [completion_ids[i] for i in index]
        part = score_completions([completions[i] for i in index], [examples[i] for i in index], spec, workers=workers,
                                 completion_ids=ids)
        errors, timeouts = errors + part.errors, timeouts + part.timeouts
        for j, i in enumerate(index):
            total[i] = part.total[j]
        for name, values in part.by_name.items():
            scores = by_name.setdefault(name, [0.0] * n)
            why = reasons.setdefault(name, [NOT_APPLICABLE] * n)
            for j, i in enumerate(index):
                scores[i], why[i] = values[j], part.reasons[name][j]
    return RewardScores(total=total, by_name=by_name, reasons=reasons, errors=errors, timeouts=timeouts)
