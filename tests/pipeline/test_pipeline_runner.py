"""The pipeline runner: stages chained through ${name}, finished stages skipped on rerun,
an interrupted stage resumed, a changed config redone (with everything downstream)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from thinkrl.config import load_config
from thinkrl.errors import ThinkrlError
from thinkrl.pipeline.runner import PipelineConfig, run_pipeline


def grpo_stage(name: str, model: str, steps: int = 2) -> dict:
    return {"name": name, "command": "grpo", "config": {
        "model": {"name": model},
        "data": {"path": "task:chain", "task_size": 64, "task_seed": 3},
        "rollout": {"prompts_per_step": 2, "group_size": 2, "max_new_tokens": 8, "reward_workers": 0},
        "optim": {"lr": 1e-3},
        "run": {"steps": steps, "save_every": 1, "plot": False},
    }}


def eval_stage(name: str, model: str, label: str) -> dict:
    return {"name": name, "command": "eval", "label": label, "config": {
        "model": {"name": model},
        "data": {"path": "task:chain", "task_size": 4},
        "eval": {"k": 2, "max_new_tokens": 8},
    }}


def pipeline_file(tmp_path: Path, stages: list[dict]) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"run": {"output_dir": str(tmp_path / "run"), "torch_threads": 1}, "stages": stages}))
    return path


def test_stages_chain_and_a_rerun_skips_finished_ones(tiny_random_model, tmp_path, capsys):
    stages = [grpo_stage("rl", str(tiny_random_model)), eval_stage("eval-rl", "${rl}", "after RL")]
    cfg = load_config(PipelineConfig, pipeline_file(tmp_path, stages))
    records = run_pipeline(cfg)
    run = tmp_path / "run"
    assert records["rl"]["output"] == str(run / "rl" / "final")
    assert (run / "rl" / "final" / "config.json").is_file()
    # the eval stage read the RL stage's checkpoint, not the base
    eval_config = yaml.safe_load((run / "eval-rl" / "config.yaml").read_text())
    assert eval_config["model"]["name"] == str(run / "rl" / "final")
    assert records["eval-rl"]["metrics"]["questions"] == 4
    out = capsys.readouterr().out
    assert "after RL" in out and "pass@1" in out
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["stages"]) == {"rl", "eval-rl"}

    before = (run / "rl" / "metrics.jsonl").stat().st_mtime_ns
    run_pipeline(cfg)
    assert "done before, skipped" in capsys.readouterr().out
    assert (run / "rl" / "metrics.jsonl").stat().st_mtime_ns == before

    # a changed upstream config redoes that stage and, through the key, the eval after it
    stages[0]["config"]["optim"]["lr"] = 2e-3
    records2 = run_pipeline(load_config(PipelineConfig, pipeline_file(tmp_path, stages)))
    assert records2["rl"]["key"] != records["rl"]["key"]
    assert records2["eval-rl"]["key"] != records["eval-rl"]["key"]
    assert (run / "rl" / "metrics.jsonl").stat().st_mtime_ns != before


def test_bad_pipelines_are_one_line_errors(tmp_path):
    with pytest.raises(ThinkrlError, match="not an earlier stage"):
        load_config(PipelineConfig, pipeline_file(tmp_path, [eval_stage("e", "${rl}", "x")]))
    with pytest.raises(ThinkrlError, match="cannot be a pipeline stage"):
        load_config(PipelineConfig, pipeline_file(tmp_path, [{"name": "s", "command": "serve"}]))
    with pytest.raises(ThinkrlError, match="used twice"):
        load_config(PipelineConfig, pipeline_file(tmp_path, [eval_stage("e", "m", "x"), eval_stage("e", "m", "y")]))


@pytest.mark.slow
def test_killed_mid_stage_the_rerun_resumes_without_redoing_finished_stages(tiny_random_model, tmp_path):
    stages = [grpo_stage("first", str(tiny_random_model), steps=2), grpo_stage("second", "${first}", steps=8),
              eval_stage("eval", "${second}", "final")]
    path = pipeline_file(tmp_path, stages)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "thinkrl.cli", "pipeline", str(path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoints = run / "second" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not (checkpoints / "step-000003").is_dir():
        assert proc.poll() is None, "the pipeline ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((run / "second" / "stage.json").read_text())["status"] == "running"
    assert not (run / "eval").exists()
    first_state = (run / "first" / "stage.json").read_text()
    first_mtime = (run / "first" / "metrics.jsonl").stat().st_mtime_ns

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "first" in done.stdout and "skipped" in done.stdout and "resuming" in done.stdout
    assert (run / "first" / "stage.json").read_text() == first_state
    assert (run / "first" / "metrics.jsonl").stat().st_mtime_ns == first_mtime
    steps = [json.loads(line)["step"] for line in (run / "second" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # resumed from its checkpoint: no step missing, none twice
    assert json.loads((run / "eval" / "stage.json").read_text())["status"] == "done"


@pytest.mark.parametrize("path", ["src/thinkrl/pipeline/recipes/mini-r1.yaml", "configs/r1-qwen2.5-math-7b.yaml"])
def test_shipped_pipelines_validate_every_stage(path, monkeypatch):
    """Every stage config of the shipped pipelines is a valid config of its command, so a
    typo in stage 9 fails at once, not after stages 1-8."""
    from thinkrl.pipeline.runner import check_stage_configs

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)  # config_file paths are relative to the repository root
    cfg = load_config(PipelineConfig, repo / path)
    check_stage_configs(cfg)
    commands = {stage.command for stage in cfg.stages}
    assert {"zero", "sft", "sample", "grpo", "distill", "eval"} <= commands


def test_a_bad_field_in_a_later_stage_fails_before_the_first_stage_runs(tiny_random_model, tmp_path):
    stages = [grpo_stage("rl", str(tiny_random_model)), eval_stage("e", "${rl}", "x")]
    stages[1]["config"]["eval"]["temprature"] = 0.5
    with pytest.raises(ThinkrlError, match=r"stage 'e' \(eval\).*temprature"):
        run_pipeline(load_config(PipelineConfig, pipeline_file(tmp_path, stages)))
    assert not (tmp_path / "run" / "rl").exists()


def test_old_flat_names_fail_naming_the_stage_and_the_new_field(tmp_path):
    stages = [{"name": "data", "command": "sample", "config": {"model": "${base}", "n": 2}}]
    stages.insert(0, eval_stage("base", "m", "x"))
    with pytest.raises(ThinkrlError, match=r"^stage 'data' \(sample\): config field 'model' is now 'model.name'"):
        run_pipeline(load_config(PipelineConfig, pipeline_file(tmp_path, stages)))
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run"), "stages": stages}))
    with pytest.raises(ThinkrlError, match=r"^config field 'output_dir' is now 'run.output_dir'"):
        load_config(PipelineConfig, old)
    assert not (tmp_path / "run" / "base").exists()


def test_a_stage_starts_from_a_config_file_with_its_config_on_top(tiny_random_model, tmp_path):
    base = grpo_stage("rl", str(tiny_random_model))["config"]
    (tmp_path / "rl.yaml").write_text(yaml.safe_dump(base))
    stages = [{"name": "rl", "command": "grpo", "config_file": str(tmp_path / "rl.yaml"),
               "config": {"run": {"steps": 1}}}]
    run_pipeline(load_config(PipelineConfig, pipeline_file(tmp_path, stages)))
    used = yaml.safe_load((tmp_path / "run" / "rl" / "config.yaml").read_text())
    assert used["run"]["steps"] == 1 and used["run"]["save_every"] == 1  # merged, not replaced
    assert used["rollout"]["group_size"] == 2
