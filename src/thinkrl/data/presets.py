"""Benchmark presets: which columns of a known file hold the question, the reference and the
tests, and how a raw answer cell becomes the reference text the graders compare against.

A preset turns one row (a dict) into an `Example`, or raises `RowError` saying what is
wrong with it; the loader adds where the row is. Auto mode picks a preset from the
columns first (they are what the conversion relies on) and the file's name second.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, NoReturn
from collections.abc import Callable, Mapping

from thinkrl.data.example import Example

# Kinds graded by something other than a reference answer: code runs tests, general is judged.
NO_REFERENCE_KINDS = ("code", "general")


class RowError(ValueError):
    """A row cannot become an Example; the message says why, the loader says where."""


@dataclass(frozen=True)
class Fields:
    """Column names. `question` lists candidates: the first one present is used."""

    question: tuple[str, ...]
    answer: str | None = "answer"
    id: str | None = "id"
    tests: str | None = "tests"
    entry_point: str | None = "entry_point"


@dataclass(frozen=True)
class Preset:
    name: str
    fields: Fields
    kind: str | None  # None: the row's own "kind" column, else "math"
    reference: Callable[[Any], str]  # raw answer cell -> reference text (raises RowError)
    meta: tuple[str, ...] = ()  # columns copied into Example.meta when present
    solution_from_answer: bool = False  # GSM8K: the answer cell is a worked solution


def _number_text(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise RowError(f"answer is {value}, not a usable reference")
    return str(int(value)) if value.is_integer() else repr(value)


def text_reference(value: Any) -> str:
    """A reference kept as written (LaTeX stays LaTeX); numbers become their shortest text."""
    if isinstance(value, bool):
        raise RowError(f"answer must be text or a number, got a boolean ({value})")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number_text(value)
    if isinstance(value, str):
        if not value.strip():
            raise RowError("answer is empty")
        return value.strip()
    raise RowError(f"answer must be text or a number, got {type(value).__name__}")


_INTEGRAL_DECIMAL = re.compile(r"[+-]?\d+\.0+")


def number_reference(value: Any) -> str:
    """AMC/AIME answers are numbers, stored as 27.0 in some files: "27.0" -> "27", 2.5 stays."""
    text = text_reference(value)
    if _INTEGRAL_DECIMAL.fullmatch(text):
        return text.split(".")[0].lstrip("+")
    return text


def gsm8k_reference(value: Any) -> str:
    """The number after the last `#### ` of a GSM8K solution, thousands commas removed."""
    if not isinstance(value, str):
        raise RowError(f"answer must be a GSM8K solution text, got {type(value).__name__}")
    if "####" not in value:
        raise RowError("answer has no final '#### <number>' line")
    final = value.rsplit("####", 1)[1].strip().replace(",", "")
    if not final:
        raise RowError("nothing after '####' in the answer")
    return final


def gsm8k_solution(value: str) -> str:
    """The worked solution without its `#### <number>` line (kept in meta for SFT data)."""
    return value.rsplit("####", 1)[0].strip()


PRESETS: dict[str, Preset] = {
    "gsm8k": Preset("gsm8k", Fields(("question",), id=None, tests=None), "math", gsm8k_reference,
                    solution_from_answer=True),
    "math500": Preset("math500", Fields(("problem",), id="unique_id", tests=None), "math", text_reference,
                      meta=("subject", "level", "unique_id", "solution")),
    "aime": Preset("aime", Fields(("problem", "question"), tests=None), "math", number_reference,
                   meta=("solution", "url")),
    "amc": Preset("amc", Fields(("question", "problem"), tests=None), "math", number_reference, meta=("url",)),
    "humaneval": Preset("humaneval", Fields(("prompt",), answer=None, id="task_id", tests="test"), "code",
                        text_reference, meta=("canonical_solution",)),
    "none": Preset("none", Fields(("prompt", "question", "problem")), None, text_reference),
}


def detect_preset(row: Mapping[str, Any], name: str) -> str:
    """The preset for a source whose first row is `row` and whose path or id is `name`."""
    columns = set(row)
    lowered = name.lower()
    if {"task_id", "prompt", "entry_point", "test"} <= columns:
        return "humaneval"
    if {"problem", "answer", "unique_id"} <= columns:
        return "math500"
    if {"question", "answer"} <= columns and isinstance(row["answer"], str) and "####" in row["answer"]:
        return "gsm8k"
    if {"problem", "answer"} <= columns or {"question", "answer"} <= columns:
        if "aime" in lowered:
            return "aime"
        if "amc" in lowered:
            return "amc"
    return "none"


def with_overrides(fields: Fields, question: str | None = None, answer: str | None = None,
                   id: str | None = None, tests: str | None = None) -> Fields:
    """The preset's columns with the ones the user named instead."""
    return replace(
        fields,
        question=(question,) if question else fields.question,
        answer=answer or fields.answer,
        id=id or fields.id,
        tests=tests or fields.tests,
    )


def _text_cell(row: Mapping[str, Any], column: str, what: str) -> str | None:
    value = row.get(column)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowError(f"{what} field '{column}' must be text, got {type(value).__name__}")
    return value


def _question(row: Mapping[str, Any], candidates: tuple[str, ...]) -> str:
    for column in candidates:
        if column in row and row[column] is not None:
            text = _text_cell(row, column, "question")
            if not text or not text.strip():
                raise RowError(f"question field '{column}' is empty")
            return text
    names = " or ".join(f"'{c}'" for c in candidates)
    _missing(f"no question: field {names} is missing", row, "data.question_field")


def _missing(message: str, row: Mapping[str, Any], setting: str) -> NoReturn:
    columns = ", ".join(sorted(map(str, row))) or "none"
    raise RowError(f"{message} (row has: {columns}; set {setting} to name the column)")


def _kind(row: Mapping[str, Any], preset: Preset, kind: str | None) -> str:
    if kind:
        return kind
    if preset.kind:
        return preset.kind
    own = row.get("kind")
    if own is None:
        return "math"
    if not isinstance(own, str) or not own:
        raise RowError(f"field 'kind' must be a non-empty text, got {own!r}")
    return own


def _tests(row: Mapping[str, Any], column: str | None, entry_point: str | None) -> str | None:
    tests = _text_cell(row, column, "tests") if column else None
    if tests is None:
        return None
    # HumanEval's tests define check(candidate) but never call it; the call makes them runnable.
    if entry_point and re.search(r"^def check\(", tests, re.M) and not re.search(r"^check\(", tests, re.M):
        tests = f"{tests.rstrip()}\n\n\ncheck({entry_point})\n"
    return tests


def _row_id(row: Mapping[str, Any], column: str | None, fallback: str) -> str:
    value = row.get(column) if column else None
    if value is None:
        return fallback
    if isinstance(value, (bool, float)) or not isinstance(value, (str, int)):
        raise RowError(f"id field '{column}' must be text or an integer, got {value!r}")
    return str(value)


def row_to_example(row: Mapping[str, Any], preset: Preset, fields: Fields, kind: str | None,
                   fallback_id: str) -> Example:
    """One row as an Example; RowError when a required cell is missing or has the wrong type."""
    question = _question(row, fields.question)
    kind = _kind(row, preset, kind)
    entry_point = _text_cell(row, fields.entry_point, "entry_point") if fields.entry_point else None
    tests = _tests(row, fields.tests, entry_point)

    raw_answer = row.get(fields.answer) if fields.answer else None
    answer = preset.reference(raw_answer) if raw_answer is not None else None
    if answer is None and kind not in NO_REFERENCE_KINDS:
        where = f"field '{fields.answer}' is missing" if fields.answer else "no answer field is set"
        _missing(f"no reference answer: {where}, and kind '{kind}' needs one", row, "data.answer_field")
    if kind == "code" and tests is None:
        where = f"field '{fields.tests}' is missing" if fields.tests else "no tests field is set"
        _missing(f"no tests: {where}, and kind 'code' is graded by running them", row, "data.tests_field")

    meta: dict[str, Any] = {}
    own_meta = row.get("meta")
    if preset.name == "none" and isinstance(own_meta, Mapping):
        meta.update(own_meta)  # rows written by thinkrl itself (Example.to_dict) round-trip
    meta.update({column: row[column] for column in preset.meta if row.get(column) is not None})
    if preset.solution_from_answer and isinstance(raw_answer, str):
        meta["solution"] = gsm8k_solution(raw_answer)
    return Example(prompt=question, answer=answer, kind=kind, id=_row_id(row, fields.id, fallback_id),
                   tests=tests, entry_point=entry_point, meta=meta)
