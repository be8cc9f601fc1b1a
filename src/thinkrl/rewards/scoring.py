"""Batch scoring: many completions x a reward spec -> weighted totals, per-reward scores, reasons.

Rewards that parse untrusted output (math-verify, the code sandbox) run in a persistent pool
of worker processes with a hard per-sample timeout; a reward that raises or times out scores
0, is counted and logged, and never takes the caller down. Cheap rewards (format tags,
synthetic-task checkers, plain-integer answers) run inline and pay no process overhead.
Given the completions' token ids, the scorer hands them (or their count) to the rewards that
name `completion_ids` / `completion_tokens` as parameters, and to no other.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from thinkrl.data.example import Example
from thinkrl.errors import ConfigError
from thinkrl.rewards.base import CONTEXT_KEYS, RewardEntry, RewardResult, get_entry
from thinkrl.rewards.pool import Outcome, shared_pool
from thinkrl.rewards.spec import RewardTerm

log = logging.getLogger(__name__)


@dataclass
class RewardScores:
    """Scores of a batch: `total[i]` is the weighted sum for completion i; `by_name[name][i]`
    and `reasons[name][i]` are each reward's own score and reason code."""

    total: list[float]
    by_name: dict[str, list[float]]
    reasons: dict[str, list[str]]
    errors: int = 0
    timeouts: int = 0

    def reason_counts(self) -> dict[str, Counter]:
        """{reward name: Counter of reason codes}, for logs and summaries."""
        return {name: Counter(reasons) for name, reasons in self.reasons.items()}

    def means(self) -> dict[str, float]:
        return {name: (sum(v) / len(v) if v else 0.0) for name, v in self.by_name.items()}


def term_key(term: RewardTerm, terms: Sequence[RewardTerm]) -> str:
    """The name a term's scores are reported under: its reward name, suffixed when repeated."""
    same = [t for t in terms if t.name == term.name]
    if len(same) == 1:
        return term.name
    return f"{term.name}#{next(i for i, t in enumerate(same) if t is term)}"


def check_options(entry: RewardEntry, options: dict[str, Any]) -> None:
    """An option the reward does not take is a config error, found before any scoring; so is
    one the scorer supplies per completion (its token ids or count)."""
    supplied = [key for key in options if key in CONTEXT_KEYS]
    if supplied:
        raise ConfigError(f"reward '{entry.name}': '{supplied[0]}' is supplied by the scorer for each completion, "
                          "not set as an option")
    params = inspect.signature(entry.fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in list(params.items())[2:]
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in CONTEXT_KEYS]
    for key in options:
        if key not in accepted:
            raise ConfigError(f"reward '{entry.name}' has no option '{key}'; its options: {', '.join(accepted) or '(none)'}")


def call_reward(fn: Callable[..., RewardResult], completion: str, example: Example, options: dict[str, Any]) -> RewardResult:
    """Run one reward and insist on a well-formed result (run inline or in a worker)."""
    result = fn(completion, example, **options)
    if not isinstance(result, RewardResult):
        raise TypeError(f"reward returned {type(result).__name__}, not RewardResult")
    if not math.isfinite(result.score):
        raise ValueError(f"reward returned a non-finite score {result.score!r}")
    return result


def _inline(fn: Callable[..., RewardResult], completion: str, example: Example, options: dict[str, Any]) -> Outcome:
    try:
        return Outcome("ok", value=call_reward(fn, completion, example, options))
    except Exception as exc:  # noqa: BLE001 - a failing reward scores 0, it does not stop training
        return Outcome("error", message=f"{type(exc).__name__}: {exc}"[:500])


def _needs_worker(entry: RewardEntry, completion: str, example: Example, options: dict[str, Any]) -> bool:
    try:
        return entry.needs_worker(completion, example, options)
    except Exception:  # noqa: BLE001 - when in doubt, isolate
        return True


def completion_context(entry: RewardEntry, ids: Sequence[int] | None) -> dict[str, Any]:
    """The per-completion facts `entry` asks for, from its token ids (None: not known, none passed)."""
    facts: dict[str, Any] = {}
    if ids is None:
        return facts
    if "completion_ids" in entry.context:
        facts["completion_ids"] = list(ids)
    if "completion_tokens" in entry.context:
        facts["completion_tokens"] = len(ids)
    return facts


def score_completions(completions: Sequence[str], examples: Sequence[Example], terms: Sequence[RewardTerm],
                      workers: int = 2, timeout_s: float = 5.0,
                      completion_ids: Sequence[Sequence[int] | None] | None = None) -> RewardScores:
    """Score `completions[i]` against `examples[i]` with every term of the spec.

    `workers` > 0: rewards that need isolation run in that many persistent worker processes,
    each call killed after `timeout_s`; `workers=0`: everything runs in this process (rewards
    such as math_accuracy still bound themselves with a helper process).
    `completion_ids[i]`: the sampled token ids of completion i (None where not known), passed
    as `completion_ids` / `completion_tokens` to the rewards that take them, so length rewards
    count the tokens the policy generated instead of re-tokenising text.
    """
    if len(completions) != len(examples):
        raise ValueError(f"{len(completions)} completions but {len(examples)} examples")
    if completion_ids is not None and len(completion_ids) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(completion_ids)} token id lists")
    if not terms:
        raise ConfigError("the reward spec is empty: name at least one reward")
    entries = [get_entry(term.name) for term in terms]
    for entry, term in zip(entries, terms):
        check_options(entry, term.options)
    keys = [term_key(term, terms) for term in terms]
    n = len(completions)
    outcomes: dict[str, list[Outcome | None]] = {key: [None] * n for key in keys}
    remote: list[tuple[str, int]] = []
    calls: list[tuple[Callable[..., Any], tuple]] = []
    for key, entry, term in zip(keys, entries, terms):
        options = dict(term.options)
        for i, (completion, example) in enumerate(zip(completions, examples)):
            completion = completion if isinstance(completion, str) else ""
            given = {**options, **completion_context(entry, completion_ids[i] if completion_ids is not None else None)}
            if workers > 0 and _needs_worker(entry, completion, example, options):
                remote.append((key, i))
                calls.append((call_reward, (entry.fn, completion, example, given)))
            else:
                outcomes[key][i] = _inline(entry.fn, completion, example, given)
    if calls:
        for (key, i), outcome in zip(remote, shared_pool(workers).run(calls, timeout_s)):
            outcomes[key][i] = outcome
    return _collect(keys, terms, outcomes, n)


def _collect(keys: list[str], terms: Sequence[RewardTerm], outcomes: dict[str, list[Outcome | None]], n: int) -> RewardScores:
    total = [0.0] * n
    by_name: dict[str, list[float]] = {}
    reasons: dict[str, list[str]] = {}
    errors = timeouts = 0
    for key, term in zip(keys, terms):
        scores, why = [0.0] * n, ["error"] * n
        failures: Counter = Counter()
        first: dict[str, str] = {}
        for i, outcome in enumerate(outcomes[key]):
            if outcome is not None and outcome.status == "ok":
                scores[i], why[i] = float(outcome.value.score), outcome.value.reason
                total[i] += term.weight * scores[i]
                continue
            status = outcome.status if outcome is not None else "error"
            why[i] = "timeout" if status == "timeout" else "error"
            failures[why[i]] += 1
            first.setdefault(why[i], outcome.message if outcome is not None else "not scored")
            if status == "timeout":
                timeouts += 1
            else:
                errors += 1
        for reason, count in failures.items():
            log.warning("reward %s: %d of %d samples scored 0 (%s), e.g. %s", key, count, n, reason, first[reason])
        by_name[key], reasons[key] = scores, why
    return RewardScores(total=total, by_name=by_name, reasons=reasons, errors=errors, timeouts=timeouts)


__all__ = ["RewardScores", "call_reward", "score_completions"]
