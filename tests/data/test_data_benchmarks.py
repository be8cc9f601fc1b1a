"""The real benchmark files in shared/data: row counts, detected presets and reference answers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from thinkrl.data.config import DataConfig
from thinkrl.data.loaders import (
    load_aime,
    load_amc,
    load_examples,
    load_gsm8k,
    load_humaneval,
    load_math500,
    load_with_report,
)

FILES = [
    ("gsm8k/train.jsonl", 7473, "gsm8k"),
    ("gsm8k/test.jsonl", 1319, "gsm8k"),
    ("math500/test.jsonl", 500, "math500"),
    ("aime24/test.jsonl", 30, "aime"),
    ("amc23/test.jsonl", 40, "amc"),
    ("humaneval/HumanEval.jsonl", 164, "humaneval"),
]


@pytest.mark.parametrize(("name", "rows", "preset"), FILES)
def test_every_file_loads_whole_with_its_preset_detected(data_dir, name, rows, preset) -> None:
    result = load_with_report(DataConfig(path=str(data_dir / name)))
    assert (len(result.examples), result.report.rows, result.report.n_skipped) == (rows, rows, 0)
    assert result.report.preset == preset
    assert len({e.id for e in result.examples}) == rows


def test_gsm8k_reference_is_the_final_number_without_commas(data_dir) -> None:
    examples = load_gsm8k(data_dir / "gsm8k" / "test.jsonl")
    assert examples[0].answer == "18" and examples[0].kind == "math"
    assert examples[0].prompt.startswith("Janet’s ducks lay 16 eggs per day.")
    # Lines 147, 202 and 231 of the file end with "#### 2,125", "#### 114,200", "#### 276,000".
    assert [examples[i].answer for i in (146, 201, 230)] == ["2125", "114200", "276000"]
    assert all("," not in e.answer and "####" not in e.meta["solution"] for e in examples)
    assert examples[0].meta["solution"].endswith("$<<9*2=18>>18 every day at the farmer’s market.")
    assert load_gsm8k(data_dir / "gsm8k" / "train.jsonl")[0].answer == "72"


def test_math500_keeps_latex_answers_and_metadata(data_dir) -> None:
    examples = load_math500(data_dir / "math500" / "test.jsonl")
    first = examples[0]
    assert first.answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert first.id == "test/precalculus/807.json"
    assert (first.meta["subject"], first.meta["level"]) == ("Precalculus", 2)
    assert sum("\\frac" in e.answer for e in examples) > 50


def test_aime_and_amc_references_are_plain_numbers(data_dir) -> None:
    aime = load_aime(data_dir / "aime24" / "test.jsonl")
    assert (aime[0].id, aime[0].answer) == ("60", "204")
    assert all(e.answer.isdigit() for e in aime)

    amc = load_amc(data_dir / "amc23" / "test.jsonl")
    assert (amc[0].id, amc[0].answer) == ("0", "27")  # stored as 27.0
    assert amc[0].prompt.startswith("Cities $A$ and $B$ are $45$ miles apart.")
    assert not any(e.answer.endswith(".0") for e in amc)


def test_humaneval_tests_call_check_and_pass_the_canonical_solution(data_dir, tmp_path) -> None:
    examples = load_humaneval(data_dir / "humaneval" / "HumanEval.jsonl")
    first = examples[0]
    assert (first.id, first.kind, first.answer) == ("HumanEval/0", "code", None)
    assert first.entry_point == "has_close_elements"
    assert first.prompt.startswith("from typing import List\n\n\ndef has_close_elements(")
    assert all(e.tests.rstrip().endswith(f"check({e.entry_point})") for e in examples)
    # The tests run as written: the canonical solution passes, a wrong body fails.
    wrong = "    return False\n"
    for example, body in ((first, first.meta["canonical_solution"]),
                          (examples[2], examples[2].meta["canonical_solution"]), (first, wrong)):
        script = tmp_path / "run.py"
        script.write_text(example.prompt + body + "\n\n" + example.tests, encoding="utf-8")
        done = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, timeout=30)
        assert (done.returncode == 0) == (body != wrong), done.stderr.decode()[-300:]


def test_preset_none_with_field_mapping_reads_a_benchmark_raw(data_dir) -> None:
    cfg = DataConfig(path=str(data_dir / "gsm8k" / "test.jsonl"), preset="none", limit=1)
    [raw] = load_examples(cfg)
    assert raw.answer.endswith("#### 18") and raw.id == "0"
    cfg = DataConfig(path=str(data_dir / "amc23" / "test.jsonl"), preset="aime", question_field="problem", limit=2)
    assert [e.answer for e in load_examples(cfg)] == ["27", "36"]
