"""Training commands read the train split, evaluation the test split, and every load says
which split of which source it read; a split that is not there is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from transformers import LlamaConfig

from thinkrl.config import load_config
from thinkrl.data.config import DataConfig, TrainDataConfig
from thinkrl.data.loaders import load_examples
from thinkrl.errors import ConfigError
from thinkrl.eval.config import EvalConfig
from thinkrl.pipeline.sample import SampleConfig
from thinkrl.pipeline.zero import ZeroConfig
from thinkrl.tiny.tokenizer import build_tokenizer
from thinkrl.train.config import GRPOConfig
from thinkrl.train.grpo import load_prompts
from thinkrl.train.sft_config import SFTConfig, SFTDataConfig
from thinkrl.train.sft_data import load_sft_data

TRAIN = [{"question": f"train {i}+1?", "answer": f"Add one.\n#### {i + 1}"} for i in range(3)]
TEST = [{"question": f"test {i}+2?", "answer": f"Add two.\n#### {i + 2}"} for i in range(2)]


@pytest.fixture()
def saved(tmp_path) -> Path:
    """A `save_to_disk` DatasetDict (GSM8K columns) whose train and test splits differ."""
    folder = tmp_path / "gsm8k-saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(TRAIN),
                          "test": datasets.Dataset.from_list(TEST)}).save_to_disk(str(folder))
    return folder


def test_every_training_command_defaults_to_the_train_split_and_eval_to_test() -> None:
    for config in (GRPOConfig, ZeroConfig, SampleConfig, SFTConfig):
        assert load_config(config, None, []).data.split == "train", config.__name__
    assert load_config(GRPOConfig, None, ["data_mix=[{path: x.jsonl}]"]).data_mix[0].split == "train"
    assert load_config(EvalConfig, None, []).data.split == "test"


def test_training_config_reads_the_train_split_and_says_so(saved, capsys) -> None:
    examples = load_examples(TrainDataConfig(path=str(saved)))
    assert [e.prompt for e in examples] == [r["question"] for r in TRAIN]
    assert f"data: gsm8k train split, 3 examples from {saved}" in capsys.readouterr().err

    held_out = load_examples(DataConfig(path=str(saved)))  # eval: the test split, as before
    assert [e.answer for e in held_out] == ["2", "3"]
    assert f"data: gsm8k test split, 2 examples from {saved}" in capsys.readouterr().err


def test_grpo_prompts_come_from_the_train_split(saved, capsys) -> None:
    cfg = load_config(GRPOConfig, None, [f"data.path={saved}", "data.template=r1_zero_short"])
    config = LlamaConfig(max_position_embeddings=256)
    examples, prompts, metrics = load_prompts(cfg, build_tokenizer(), config)
    assert [e.prompt for e in examples] == [r["question"] for r in TRAIN]
    assert prompts[0] == "User: train 0+1?. Assistant:"
    assert metrics == {"data/long_prompts_skipped": 0, "data/long_prompts_truncated": 0}
    assert "gsm8k train split, 3 examples" in capsys.readouterr().err


def test_sft_reads_the_train_split_and_says_so(tmp_path, capsys) -> None:
    folder = tmp_path / "sft-saved"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"prompt": "a", "response": "train answer"}] * 3),
        "test": datasets.Dataset.from_list([{"prompt": "b", "response": "test answer"}]),
    }).save_to_disk(str(folder))
    data = load_sft_data(SFTDataConfig(path=str(folder)), build_tokenizer(), seed=0)
    assert data.report.rows == 3
    assert f"data: 3 rows of the train split from {folder}" in capsys.readouterr().err


def test_a_missing_split_names_the_splits_there(tmp_path) -> None:
    folder = tmp_path / "eval-only"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(TEST),
                          "validation": datasets.Dataset.from_list(TEST)}).save_to_disk(str(folder))
    with pytest.raises(ConfigError, match=r"no split 'train'; data\.split can be test, validation"):
        load_examples(TrainDataConfig(path=str(folder)))
    with pytest.raises(ConfigError, match=r"no split 'train'; data\.split can be test, validation"):
        load_sft_data(SFTDataConfig(path=str(folder), prompt_field="question", response_field="answer"),
                      build_tokenizer(), seed=0)


def test_a_lone_test_file_is_not_taken_for_the_train_split(tmp_path, capsys) -> None:
    folder = tmp_path / "benchmark"
    folder.mkdir()
    (folder / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in TEST))
    with pytest.raises(ConfigError, match=r"only data file test\.jsonl is the 'test' split, not 'train'"):
        load_examples(TrainDataConfig(path=str(folder)))
    assert len(load_examples(TrainDataConfig(path=str(folder), split="test"))) == 2  # asked for: fine
    assert "gsm8k test split, 2 examples" in capsys.readouterr().err


def test_sources_without_splits_say_so(saved, tmp_path, capsys) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in TRAIN))
    load_examples(TrainDataConfig(path=str(path), limit=2))
    assert f"data: gsm8k, 2 of 3 examples (data.limit) from {path} (one file: data.split does not apply)" in (
        capsys.readouterr().err)
    load_examples(TrainDataConfig(path="task:chain", task_size=4))
    assert "data: task:chain training split, 4 examples drawn with task_seed 0" in capsys.readouterr().err
    load_examples(DataConfig(path="task:chain", task_size=4))
    assert "task:chain held-out split, 4 examples drawn with task_seed 1234" in capsys.readouterr().err
