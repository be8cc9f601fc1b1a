"""A run folder holds one run: a second run into it is refused, resuming checks the config."""

from __future__ import annotations

import pytest
from test_train_grpo import small_config

from thinkrl.errors import ConfigError
from thinkrl.train.grpo import train_grpo
from thinkrl.train.run_folder import config_diff
from thinkrl.train.tracking import read_metrics


def test_config_diff_names_dotted_fields():
    old = {"optim": {"lr": 0.1, "schedule": "constant"}, "run": {"steps": 2}, "resume": False}
    new = {"optim": {"lr": 0.2, "schedule": "constant"}, "run": {"steps": 4}, "resume": True}
    assert config_diff(old, new) == [("optim.lr", 0.1, 0.2), ("resume", False, True), ("run.steps", 2, 4)]


def test_a_second_run_into_a_finished_runs_folder_is_refused(tiny_random_model, tmp_path):
    train_grpo(small_config(tiny_random_model, tmp_path))
    with pytest.raises(ConfigError, match=r"already holds a run.*--resume.*run.overwrite=true"):
        train_grpo(small_config(tiny_random_model, tmp_path))
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]  # nothing lost
    train_grpo(small_config(tiny_random_model, tmp_path, "run.overwrite=true", "run.steps=1"))
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1]  # replaced, not mixed
    assert not (tmp_path / "checkpoints" / "step-000002").exists()


def test_resume_with_a_changed_config_shows_the_difference_and_refuses(tiny_random_model, tmp_path):
    train_grpo(small_config(tiny_random_model, tmp_path))
    with pytest.raises(ConfigError, match=r"optim.lr: 0.001 -> 0.002"):
        train_grpo(small_config(tiny_random_model, tmp_path, "resume=true", "optim.lr=0.002", "run.steps=3"))
    train_grpo(small_config(tiny_random_model, tmp_path, "resume=true", "run.steps=3"))  # a longer run is no change
    result = train_grpo(small_config(tiny_random_model, tmp_path, "resume=true", "optim.lr=0.002", "run.steps=4",
                                     "run.accept_config_change=true"))
    assert result.steps_done == 4
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
