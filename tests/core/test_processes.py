"""Work that does not split over processes runs once under `accelerate launch`, and a
pipeline launched on 2 processes trains on both and samples/evaluates on one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from launching import launch_two

from thinkrl.processes import main_process_only


def test_main_process_only_without_a_launch_just_runs():
    assert main_process_only(lambda: 41 + 1) == 42


@pytest.mark.slow
def test_main_process_only_runs_once_and_shares_result_and_failure(tmp_path):
    proc = launch_two(Path(__file__).resolve().parent / "main_only_script.py", [str(tmp_path)], {})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ran").read_text().split() == ["0"]  # once, on the main process
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [s["got"] for s in seen] == [{"made_by": 0}] * 2
    assert seen[0]["failure"] == "ValueError: bad row 7"
    assert seen[1]["failure"] == "ThinkrlError: the main process failed: ValueError: bad row 7"


@pytest.mark.slow
def test_pipeline_on_two_processes(tiny_random_model, tmp_path):
    """GRPO on both processes (whole groups each), the evaluation once; the records and the
    table are written by the main process alone."""
    stages = [
        {"name": "rl", "command": "grpo", "config": {
            "model": {"name": str(tiny_random_model)}, "data": {"path": "task:chain", "task_size": 64, "task_seed": 3},
            "rollout": {"prompts_per_step": 2, "group_size": 2, "max_new_tokens": 8, "reward_workers": 0},
            "run": {"steps": 2, "save_every": 1, "plot": False}}},
        {"name": "eval-rl", "command": "eval", "label": "after RL", "config": {
            "model": {"name": "${rl}"}, "data": {"path": "task:chain", "task_size": 4}, "eval": {"k": 2, "max_new_tokens": 8}}},
    ]
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run"), "torch_threads": 1, "stages": stages}))
    proc = launch_two("-m thinkrl.cli", ["pipeline", str(path)], {})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    assert json.loads((run / "rl" / "stage.json").read_text())["status"] == "done"
    assert (run / "rl" / "final" / "model.safetensors").is_file()
    assert json.loads((run / "eval-rl" / "stage.json").read_text())["metrics"]["questions"] == 4
    assert set(json.loads((run / "summary.json").read_text())["stages"]) == {"rl", "eval-rl"}
    assert proc.stdout.count("after RL") == 1  # one table, from the main process
