"""Find the final answer (or program) in a completion.

Only the *last* answer counts: a model may try several before settling, and grading an
earlier one would reward an answer it abandoned. Scans are linear in the completion's
length, so a megabyte of output costs milliseconds.
"""

from __future__ import annotations

import re
from typing import Literal

AnswerMode = Literal["auto", "boxed", "answer_tag"]
ANSWER_MODES = ("auto", "boxed", "answer_tag")
_BOX_COMMANDS = ("\\boxed", "\\fbox")
_FENCE = re.compile(r"```([^\n`]*)\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = {"python", "py", "python3", "py3"}


def _closing_brace(text: str, open_at: int) -> int | None:
    """Index of the `}` matching the `{` at `open_at` (escaped braces `\\{` do not count)."""
    depth = 0
    i = open_at
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` or `\\fbox{...}` (nested braces kept), else None.

    A last box left unclosed (a truncated completion) gives None rather than an earlier box.
    """
    best = -1
    for command in _BOX_COMMANDS:
        at = text.rfind(command)
        while at != -1:
            after = at + len(command)
            nxt = text[after:after + 1]
            if nxt == "{" or nxt.isspace():  # not \boxedfoo
                best = max(best, at)
                break
            at = text.rfind(command, 0, at)
    if best < 0:
        return None
    start = best + (5 if text.startswith("\\fbox", best) else 6)
    while start < len(text) and text[start] == " ":
        start += 1
    if start >= len(text):
        return None
    if text[start] != "{":  # `\boxed 5`: the answer runs to the next space or `$`
        match = re.match(r"[^\s$]+", text[start:])
        return match.group(0) if match else None
    end = _closing_brace(text, start)
    if end is None:
        return None
    return text[start + 1:end]


def last_answer_tag(text: str) -> str | None:
    """Content of the last `<answer>...</answer>` pair, else None."""
    start = text.rfind("<answer>")
    if start < 0:
        return None
    end = text.find("</answer>", start)
    if end < 0:
        return None
    return text[start + len("<answer>"):end]


def _clean(answer: str | None) -> str | None:
    if answer is None:
        return None
    answer = answer.strip()
    return answer or None


def extract_answer(completion: str, mode: AnswerMode = "auto") -> str | None:
    """The final answer text, or None when there is none.

    "boxed": last `\\boxed{}`/`\\fbox{}`; "answer_tag": last `<answer>` block; "auto": the
    answer tag first (a box inside it wins), then a box anywhere.
    """
    if mode not in ANSWER_MODES:
        raise ValueError(f"answer mode must be one of {', '.join(ANSWER_MODES)}, got {mode!r}")
    if not isinstance(completion, str) or not completion:
        return None
    if mode == "boxed":
        return _clean(last_boxed(completion))
    tagged = last_answer_tag(completion)
    if mode == "answer_tag":
        return _clean(tagged)
    if tagged is not None:
        inner = last_boxed(tagged)
        return _clean(inner if inner is not None else tagged)
    return _clean(last_boxed(completion))


def extract_code(completion: str) -> str | None:
    """The last ```python fenced block, or the last fenced block of any language, else None."""
    if not isinstance(completion, str) or "```" not in completion:
        return None
    last_any = last_python = None
    for match in _FENCE.finditer(completion):
        tag = match.group(1).strip().lower()
        last_any = match.group(2)
        if tag in _PYTHON_TAGS:
            last_python = match.group(2)
    code = last_python if last_python is not None else last_any
    return code if code and code.strip() else None
