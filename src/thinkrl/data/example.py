"""The one record every stage passes around: a prompt with what is needed to grade an answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Example:
    """A question and the reference needed to grade answers to it.

    `kind` routes grading: "math" (math-verify against `answer`), "code" (run `tests`
    in the sandbox), "general" (judge / reward model), or a synthetic task name such
    as "chain" or "countdown" (the task's own exact checker, see `data/tasks`).
    """

    prompt: str
    answer: str | None = None
    kind: str = "math"
    id: str = ""
    tests: str | None = None
    entry_point: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prompt": self.prompt,
            "answer": self.answer,
            "kind": self.kind,
            "tests": self.tests,
            "entry_point": self.entry_point,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Example:
        return cls(
            prompt=row["prompt"],
            answer=row.get("answer"),
            kind=row.get("kind", "math"),
            id=str(row.get("id", "")),
            tests=row.get("tests"),
            entry_point=row.get("entry_point"),
            meta=dict(row.get("meta") or {}),
        )
