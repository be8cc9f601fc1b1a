"""What a GRPO step reports, and the warnings for runs that cannot learn."""

from __future__ import annotations

import logging
from collections import Counter

from thinkrl.train.rollouts import Rollout

log = logging.getLogger(__name__)


def step_metrics(rollout: Rollout, update: dict, gen_time_s: float, train_time_s: float, lr: float) -> dict:
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
    for name, values in rollout.scores.by_name.items():
        metrics[f"reward/{name}"] = sum(values) / max(len(values), 1)
        for reason, count in Counter(rollout.scores.reasons[name]).items():
            metrics[f"reasons/{name}/{reason}"] = count / n
    accuracy = [v for k, v in rollout.scores.by_name.items() if "accuracy" in k]
    if accuracy:
        metrics["accuracy"] = sum(sum(v) / max(len(v), 1) for v in accuracy) / len(accuracy)
    formats = [v for k, v in rollout.scores.by_name.items() if k.startswith("format")]
    if formats:
        metrics["format_rate"] = sum(sum(x > 0 for x in v) / max(len(v), 1) for v in formats) / len(formats)
    for key in ("loss", "kl", "clip_fraction", "clip_fraction_low", "clip_fraction_high", "ratio_mean", "entropy", "grad_norm"):
        if key in update:
            metrics[key] = update[key]
    metrics["lr"] = lr
    metrics["time/generation_s"] = gen_time_s
    metrics["time/train_s"] = train_time_s
    metrics["time/generation_share"] = gen_time_s / max(gen_time_s + train_time_s, 1e-9)
    metrics["tokens_per_s"] = rollout.generated_tokens / max(gen_time_s, 1e-9)
    return metrics


class LearningWarnings:
    """Says clearly, once each, when a run cannot learn: no reward variance, every answer cut
    off, or a format reward that never fires (often a template that pre-fills a tag)."""

    def __init__(self, patience: int = 3) -> None:
        self.patience = patience
        self.streaks: Counter = Counter()
        self.said: set[str] = set()

    def check(self, step: int, metrics: dict) -> list[str]:
        conditions = {
            "zero_variance": metrics.get("zero_variance_share", 0) >= 1.0,
            "truncated": metrics.get("completion/truncated_share", 0) >= 1.0,
            "format": metrics.get("format_rate", 1.0) == 0.0,
        }
        messages = {
            "zero_variance": "every group's rewards agree: advantages are all 0 and nothing is learned "
                             "(tasks too hard/easy for the model? try algo.dynamic_sampling=true or a larger group_size)",
            "truncated": "every completion hit rollout.max_new_tokens: raise it or add length shaping",
            "format": "the format reward never fires: check data.template (does it pre-fill <think>?) and the format reward name",
        }
        said_now = []
        for key, bad in conditions.items():
            self.streaks[key] = self.streaks[key] + 1 if bad else 0
            if self.streaks[key] >= self.patience and key not in self.said:
                self.said.add(key)
                log.warning("step %d: %s", step, messages[key])
                said_now.append(messages[key])
        return said_now
