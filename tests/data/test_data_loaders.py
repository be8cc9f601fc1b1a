"""Loading prompt sets from files, folders, hub ids and tasks, and reporting bad rows."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import datasets
import pytest

from thinkrl.data.config import DataConfig
from thinkrl.data.example import Example
from thinkrl.data.loaders import load_examples, load_with_report
from thinkrl.errors import ConfigError, DataError

ROWS = [
    {"question": "What is 2+2?", "answer": "4", "id": "a"},
    {"question": "What is 3*3?", "answer": 9, "id": "b"},
    {"question": "Half of 5?", "answer": "5/2", "id": "c"},
]


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_rows_become_examples(tmp_path) -> None:
    path = write_jsonl(tmp_path / "set.jsonl", [json.dumps(r) for r in ROWS])
    examples = load_examples(DataConfig(path=str(path)))
    assert [(e.prompt, e.answer, e.id, e.kind) for e in examples] == [
        ("What is 2+2?", "4", "a", "math"), ("What is 3*3?", "9", "b", "math"), ("Half of 5?", "5/2", "c", "math")]


def test_bad_json_names_file_and_line_or_is_skipped_and_counted(tmp_path, caplog) -> None:
    lines = [json.dumps(ROWS[0]), json.dumps(ROWS[1]), '{"question": "broken", "answer": ', json.dumps(ROWS[2])]
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError) as err:
        load_examples(DataConfig(path=str(path)))
    assert f"{path}:3: bad JSON" in str(err.value) and "\n" not in str(err.value)

    with caplog.at_level(logging.WARNING, logger="thinkrl.data.loaders"):
        result = load_with_report(DataConfig(path=str(path), on_bad_row="skip"))
    assert [e.id for e in result.examples] == ["a", "b", "c"]
    assert (result.report.rows, result.report.kept, result.report.n_skipped) == (4, 3, 1)
    assert result.report.skipped[0][0] == f"{path}:3"
    assert "skipped 1 bad rows" in caplog.text and f"{path}:3" in caplog.text


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"question": "Q?"}, "no reference answer: field 'answer' is missing"),
        ({"answer": "1"}, "no question"),
        ({"question": 7, "answer": "1"}, "question field 'question' must be text, got int"),
        ({"question": "Q?", "answer": ["1"]}, "answer must be text or a number, got list"),
        ({"question": "def f():", "kind": "code"}, "no tests"),
        ([1, 2], "row is a JSON list, not an object"),
    ],
)
def test_malformed_rows_say_what_is_wrong_and_where(tmp_path, row, message) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [json.dumps(ROWS[0]), json.dumps(row)])
    with pytest.raises(DataError, match=f"rows.jsonl:2: {message}".replace("(", r"\(").replace(")", r"\)")):
        load_examples(DataConfig(path=str(path), preset="none"))
    assert len(load_examples(DataConfig(path=str(path), preset="none", on_bad_row="skip"))) == 1


def test_a_source_with_only_bad_rows_is_an_error(tmp_path) -> None:
    path = write_jsonl(tmp_path / "all_bad.jsonl", ["not json", "{}"])
    with pytest.raises(DataError, match="no examples to use \\(all 2 rows were malformed\\)"):
        load_examples(DataConfig(path=str(path), on_bad_row="skip"))


def test_field_mapping_overrides_the_preset(tmp_path) -> None:
    rows = [{"q": "Capital of France?", "ref": "Paris", "uid": 17, "question": "decoy"}]
    path = write_jsonl(tmp_path / "mapped.jsonl", [json.dumps(r) for r in rows])
    cfg = DataConfig(path=str(path), question_field="q", answer_field="ref", id_field="uid", kind="general")
    [example] = load_examples(cfg)
    assert (example.prompt, example.answer) == ("Capital of France?", "Paris")
    assert (example.id, example.kind) == ("17", "general")


def test_json_list_and_shuffle_limit(tmp_path) -> None:
    path = tmp_path / "list.json"
    path.write_text(json.dumps(ROWS * 4), encoding="utf-8")
    assert len(load_examples(DataConfig(path=str(path)))) == 12
    first = [e.prompt for e in load_examples(DataConfig(path=str(path), shuffle=True, seed=3, limit=5))]
    again = [e.prompt for e in load_examples(DataConfig(path=str(path), shuffle=True, seed=3, limit=5))]
    assert len(first) == 5 and first == again
    assert [e.id for e in load_examples(DataConfig(path=str(path), limit=2))] == ["a", "b"]


def test_parquet_round_trip(tmp_path) -> None:
    path = tmp_path / "set.parquet"
    datasets.Dataset.from_list([{**r, "answer": str(r["answer"])} for r in ROWS]).to_parquet(str(path))
    examples = load_examples(DataConfig(path=str(path)))
    assert [(e.prompt, e.answer, e.id) for e in examples] == [(r["question"], str(r["answer"]), r["id"]) for r in ROWS]


def test_parquet_bad_row_names_the_row(tmp_path) -> None:
    path = tmp_path / "holes.parquet"
    rows = [{"question": "Q1", "answer": "1"}, {"question": "Q2", "answer": None}]
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    with pytest.raises(DataError, match=r"holes.parquet, row 2: no reference answer"):
        load_examples(DataConfig(path=str(path)))


def test_save_to_disk_folder_picks_the_split(tmp_path) -> None:
    splits = datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"problem": "train q", "answer": "1"}]),
        "test": datasets.Dataset.from_list([{"problem": "test q", "answer": "2"},
                                            {"problem": "test r", "answer": "3"}]),
    })
    splits.save_to_disk(str(tmp_path / "saved"))
    assert [e.prompt for e in load_examples(DataConfig(path=str(tmp_path / "saved")))] == ["test q", "test r"]
    assert [e.answer for e in load_examples(DataConfig(path=str(tmp_path / "saved"), split="train"))] == ["1"]
    with pytest.raises(ConfigError, match="no split 'dev'; data.split can be train, test"):
        load_examples(DataConfig(path=str(tmp_path / "saved"), split="dev"))

    splits["test"].save_to_disk(str(tmp_path / "one"))  # a single Dataset: split does not matter
    assert len(load_examples(DataConfig(path=str(tmp_path / "one"), split="anything"))) == 2


def test_folder_of_data_files_picks_the_split(tmp_path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [json.dumps(ROWS[0])])
    write_jsonl(tmp_path / "test.jsonl", [json.dumps(ROWS[1]), json.dumps(ROWS[2])])
    assert [e.id for e in load_examples(DataConfig(path=str(tmp_path)))] == ["b", "c"]
    assert [e.id for e in load_examples(DataConfig(path=str(tmp_path), split="train"))] == ["a"]
    with pytest.raises(DataError, match="no data file for split 'dev'"):
        load_examples(DataConfig(path=str(tmp_path), split="dev"))


def test_missing_local_path_is_one_line(tmp_path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        load_examples(DataConfig(path=str(tmp_path / "nope.jsonl")))


def test_hub_id_offline_fails_fast_in_one_line(monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: as unreachable as no network
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_examples(DataConfig(path="openai/gsm8k", subset="main"))
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "\n" not in message
    assert "'openai/gsm8k' is not a local file or folder" in message and "save_to_disk" in message
    assert err.value.__cause__ is None and err.value.__context__ is None  # nothing chained to print


def test_task_source_draws_the_held_out_split() -> None:
    tasks = pytest.importorskip("thinkrl.data.tasks")
    examples = load_examples(DataConfig(path="task:chain", task_size=12))
    assert [e.to_dict() for e in examples] == [e.to_dict() for e in tasks.get_task("chain").generate(n=12, seed=1234)]
    assert all(e.kind == "chain" for e in examples)
    assert len(load_examples(DataConfig(path="task:chain", task_size=12, limit=4))) == 4
    with pytest.raises(DataError, match="unknown task 'nope'"):
        load_examples(DataConfig(path="task:nope"))


def test_examples_saved_as_jsonl_load_back_unchanged(tmp_path) -> None:
    """What thinkrl writes (Example.to_dict rows) reads back as the same examples."""
    saved = [
        Example(prompt="((1+2)*3)", answer="9", kind="chain", id="c-0", meta={"values": [3, 9]}),
        Example(prompt="def f():\n", kind="code", id="h-0", tests="assert f() == 1", entry_point="f"),
    ]
    path = write_jsonl(tmp_path / "own.jsonl", [json.dumps(e.to_dict()) for e in saved])
    assert load_examples(DataConfig(path=str(path))) == saved
