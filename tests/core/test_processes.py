"""Work that does not split over processes runs once under `accelerate launch`, a pipeline
launched on 2 processes trains on both and samples/evaluates on one, and a launched process
exits with its command's status, never with an abort at teardown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from launching import launch_two

from thinkrl.processes import main_process_only

HERE = Path(__file__).resolve().parent


def test_main_process_only_without_a_launch_just_runs():
    assert main_process_only(lambda: 41 + 1) == 42


@pytest.mark.slow
def test_main_process_only_runs_once_and_shares_result_and_failure(tmp_path):
    proc = launch_two(HERE / "main_only_script.py", [str(tmp_path)], {})
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
    path.write_text(yaml.safe_dump({"run": {"output_dir": str(tmp_path / "run"), "torch_threads": 1}, "stages": stages}))
    proc = launch_two("-m thinkrl.cli", ["pipeline", str(path)], {})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    assert json.loads((run / "rl" / "stage.json").read_text())["status"] == "done"
    assert (run / "rl" / "final" / "model.safetensors").is_file()
    assert json.loads((run / "eval-rl" / "stage.json").read_text())["metrics"]["questions"] == 4
    assert set(json.loads((run / "summary.json").read_text())["stages"]) == {"rl", "eval-rl"}
    assert proc.stdout.count("after RL") == 1  # one table, from the main process


def run_exit_script(tmp_path: Path, main_body: str, world_size: str = "2") -> subprocess.CompletedProcess:
    """Run a script ending in `exit_when_done(main)` with a launch's WORLD_SIZE but no group."""
    script = tmp_path / "script.py"
    script.write_text("import atexit, sys, threading, time\nfrom thinkrl.processes import exit_when_done\n\n"
                      f"def main():\n{main_body}\n\nexit_when_done(main)\n")
    env = {**os.environ, "WORLD_SIZE": world_size}
    return subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)


def test_launched_exit_still_does_what_teardown_would(tmp_path):
    """Leaving by os._exit must not lose what the interpreter's teardown would have done:
    non-daemon threads finish, atexit hooks run, buffered output comes out."""
    proc = run_exit_script(tmp_path, """\
    out = sys.argv[1]
    atexit.register(lambda: open(f"{out}/atexit", "w").close())
    def late(): time.sleep(0.3); open(f"{out}/thread", "w").close()
    threading.Thread(target=late).start()
    print("buffered, not flushed", end="")""")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "atexit").exists() and (tmp_path / "thread").exists()
    assert proc.stdout == "buffered, not flushed"


@pytest.mark.parametrize(("body", "code", "says"), [
    ("    raise SystemExit(3)", 3, ""),
    ("    sys.exit('bad config')", 1, "bad config"),
    ("    raise ValueError('row 7')", 1, "ValueError: row 7"),
    ("    raise KeyboardInterrupt", 130, "KeyboardInterrupt"),
])
@pytest.mark.parametrize("world_size", ["2", "1"])
def test_exit_status_is_what_the_interpreter_would_give(tmp_path, body, code, says, world_size):
    proc = run_exit_script(tmp_path, body, world_size)
    expected = -2 if (code == 130 and world_size == "1") else code  # a plain run dies of SIGINT, as Python does
    assert proc.returncode == expected, proc.stderr
    assert says in proc.stderr


@pytest.mark.slow
def test_launched_run_with_gloo_work_in_flight_exits_zero():
    """The state that aborted finished launched runs now and then: gloo threads still busy,
    the group still held. Ended the old way (close the group, return), 9 of 30 such launches
    aborted under CPU load; through `exit_when_done`, none may."""
    for _ in range(4):
        proc = launch_two(HERE / "gloo_exit_script.py", [], {})
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "terminate called" not in proc.stderr
