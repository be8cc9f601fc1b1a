"""Format rewards: did the completion lay out its thinking and its answer as the template asks?

When the prompt already ends with `<think>` (R1 chat templates pre-fill it), the completion
starts inside the think block; requiring a leading `<think>` there would score every
completion 0, so the opening tag is then implied (`example.meta["prompt_prefills_think"]` or
the `prefilled_think` option).
"""

from __future__ import annotations

from thinkrl.data.example import Example
from thinkrl.rewards.base import RewardResult, register

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def prefills_think(example: Example, prefilled_think: bool | None) -> bool:
    if prefilled_think is not None:
        return bool(prefilled_think)
    return bool((example.meta or {}).get("prompt_prefills_think", False))


def as_seen(completion: str, example: Example, prefilled_think: bool | None = None) -> str:
    """The completion with the prompt's pre-filled `<think>` put back in front."""
    return ("<think>" + completion) if prefills_think(example, prefilled_think) else completion


def _tag_problem(text: str, tags: tuple[str, ...]) -> str | None:
    """The reason code for a missing or repeated tag, else None."""
    for tag in tags:
        count = text.count(tag)
        if count > 1:
            return "format_duplicate_tag"
        if count == 0:
            return "format_missing_think" if "think" in tag else "format_missing_answer"
    return None


@register("format_r1", isolate=False)
def format_r1(completion: str, example: Example, prefilled_think: bool | None = None) -> RewardResult:
    """1.0 for `<think>...</think>` followed by a non-empty answer (R1's chat format)."""
    text = as_seen(completion, example, prefilled_think)
    problem = _tag_problem(text, _TAGS[:2])
    if problem:
        return RewardResult(0.0, problem)
    opened, closed = text.index("<think>"), text.index("</think>")
    if closed < opened:
        return RewardResult(0.0, "format_order")
    if text[:opened].strip():
        return RewardResult(0.0, "format_text_before_think")
    if not text[opened + len("<think>"):closed].strip():
        return RewardResult(0.0, "format_empty_think")
    if not text[closed + len("</think>"):].strip():
        return RewardResult(0.0, "format_missing_answer")
    return RewardResult(1.0, "format_ok")


@register("format_r1_zero", isolate=False)
def format_r1_zero(completion: str, example: Example, prefilled_think: bool | None = None) -> RewardResult:
    """1.0 for exactly `<think>...</think> <answer>...</answer>`, only whitespace around and between."""
    text = as_seen(completion, example, prefilled_think)
    problem = _tag_problem(text, _TAGS)
    if problem:
        return RewardResult(0.0, problem)
    at = [text.index(tag) for tag in _TAGS]
    if at != sorted(at):
        return RewardResult(0.0, "format_order")
    outside = (text[:at[0]], text[at[1] + len("</think>"):at[2]], text[at[3] + len("</answer>"):])
    if any(part.strip() for part in outside):
        return RewardResult(0.0, "format_extra_text")
    if not text[at[0] + len("<think>"):at[1]].strip():
        return RewardResult(0.0, "format_empty_think")
    if not text[at[2] + len("<answer>"):at[3]].strip():
        return RewardResult(0.0, "format_empty_answer")
    return RewardResult(1.0, "format_ok")
