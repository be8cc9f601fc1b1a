"""What a GRPO step reports, and the warnings for runs that cannot learn."""

from __future__ import annotations

import logging
from collections import Counter

from thinkrl.rewards.routing import NOT_APPLICABLE
from thinkrl.train.rollouts import Rollout

log = logging.getLogger(__name__)


def long_prompt_metrics(skipped: int, truncated: int) -> dict[str, int]:
    """Prompts the model's context kept out of training (or cut to fit), counted once when the
    prompts are loaded; logged with every step so metrics.jsonl and the plots say so."""
    return {"data/long_prompts_skipped": skipped, "data/long_prompts_truncated": truncated}


def step_metrics(rollout: Rollout, update: dict, gen_time_s: float, train_time_s: float, lr: float,
                 data: dict | None = None) -> dict:
    """One step's numbers; `data` adds the load-time data counts (`long_prompt_metrics`)."""
    rewards = rollout.rewards
    lengths = [len(c.completion_ids) for c in rollout.completions]
    n = max(len(lengths), 1)
    metrics: dict = {
        "reward/mean": float(rewards.mean()),
        "reward/std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "completion/length_mean": sum(lengths) / n,
        "completion/length_max": max(lengths, default=0),
        "completion/truncated_share": sum(c.truncated for c in rollout.completions) / n,
        "zero_variance_share": rollout.zero_variance_groups / max(rollout.groups_sampled, 1),
        "reward_errors": rollout.scores.errors,
        "reward_timeouts": rollout.scores.timeouts,
    }
    applied = {name: _applied(rollout, name) for name in rollout.scores.by_name}
    for name, values in applied.items():
        if values:
            metrics[f"reward/{name}"] = sum(values) / len(values)
        for reason, count in Counter(rollout.scores.reasons[name]).items():
            if reason != NOT_APPLICABLE:
                metrics[f"reasons/{name}/{reason}"] = count / n
    metrics.update(_headline(applied))
    kinds = [ex.kind for ex in rollout.examples for _ in range(rollout.group_size)]
    if len(set(kinds)) > 1:  # RL over a mixed prompt set: how each kind fares
        for kind in sorted(set(kinds)):
            index = [i for i, k in enumerate(kinds) if k == kind]
            metrics[f"kind/{kind}/share"] = len(index) / n
            metrics[f"kind/{kind}/reward"] = float(rewards[index].mean())
            part = {name: [rollout.scores.by_name[name][i] for i in index
                           if rollout.scores.reasons[name][i] != NOT_APPLICABLE] for name in applied}
            metrics.update({f"kind/{kind}/{key}": value for key, value in _headline(part).items()})
    metrics.update(update)  # loss, kl, clip fractions (the loss's own too), ratio_mean, entropy, grad_norm, ...
    metrics["lr"] = lr
    metrics["time/generation_s"] = gen_time_s
    metrics["time/train_s"] = train_time_s
    metrics["time/generation_share"] = gen_time_s / max(gen_time_s + train_time_s, 1e-9)
    metrics["tokens_per_s"] = rollout.generated_tokens / max(gen_time_s, 1e-9)
    metrics.update(data or {})
    return metrics


def _applied(rollout: Rollout, name: str) -> list[float]:
    """A reward's scores on the samples it applies to (routing leaves others `n/a`)."""
    return [score for score, reason in zip(rollout.scores.by_name[name], rollout.scores.reasons[name])
            if reason != NOT_APPLICABLE]


def _headline(scores: dict[str, list[float]]) -> dict[str, float]:
    """accuracy (the mean of the accuracy rewards) and format_rate (share of samples a format reward fired on)."""
    out = {}
    accuracy = [v for k, v in scores.items() if "accuracy" in k and v]
    if accuracy:
        out["accuracy"] = sum(sum(v) / len(v) for v in accuracy) / len(accuracy)
    formats = [v for k, v in scores.items() if k.startswith("format") and v]
    if formats:
        out["format_rate"] = sum(sum(x > 0 for x in v) / len(v) for v in formats) / len(formats)
    return out


class LearningWarnings:
    """Says clearly, once each, when a run cannot learn: no reward variance, every answer cut
    off, a format reward that never fires (often a template that pre-fills a tag), or a
    policy whose token entropy has collapsed below `entropy_floor` (it no longer explores)."""

    def __init__(self, patience: int = 3, entropy_floor: float = 0.0) -> None:
        self.patience = patience
        self.entropy_floor = entropy_floor
        self.streaks: Counter = Counter()
        self.said: set[str] = set()

    def check(self, step: int, metrics: dict) -> list[str]:
        conditions = {
            "zero_variance": metrics.get("zero_variance_share", 0) >= 1.0,
            "truncated": metrics.get("completion/truncated_share", 0) >= 1.0,
            "format": metrics.get("format_rate", 1.0) == 0.0,
            "entropy": metrics.get("entropy", float("inf")) < self.entropy_floor,
        }
        messages = {
            "zero_variance": "every group's rewards agree: advantages are all 0 and nothing is learned "
                             "(tasks too hard/easy for the model? try algo.dynamic_sampling=true or a larger group_size)",
            "truncated": "every completion hit rollout.max_new_tokens: raise it or add length shaping",
            "format": "the format reward never fires: check data.template (does it pre-fill <think>?) and the format reward name",
            "entropy": f"the policy's mean token entropy is below {self.entropy_floor} nats: it has nearly stopped "
                       "exploring (entropy collapse); try algo.entropy_target, algo.entropy_coef, a larger "
                       "algo.eps_high (clip-higher) or a higher rollout.temperature",
        }
        said_now = []
        for key, bad in conditions.items():
            self.streaks[key] = self.streaks[key] + 1 if bad else 0
            if self.streaks[key] >= self.patience and key not in self.said:
                self.said.add(key)
                log.warning("step %d: %s", step, messages[key])
                said_now.append(messages[key])
        return said_now
