"""Progress when stdout is not a terminal: a plain line per step, written as it happens."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from thinkrl.train.progress import plain_line


def test_plain_line_says_step_numbers_time_and_eta():
    line = plain_line("GRPO", 3, 60, "reward 0.5  len 42", 2.0)
    assert line.startswith("GRPO step 3/60") and "reward 0.5" in line and "2.00 s/step" in line and "ETA 1.9m" in line


@pytest.mark.slow
def test_a_redirected_runs_log_grows_during_the_run(tiny_random_model, tmp_path):
    log = tmp_path / "run.log"
    args = [sys.executable, "-m", "thinkrl.cli", "grpo", "--set", f"model.name={tiny_random_model}",
            "--set", f"run.output_dir={tmp_path / 'run'}", "--set", "run.steps=40", "--set", "run.save_every=0",
            "--set", "run.plot=false", "--set", "rollout.prompts_per_step=2", "--set", "rollout.group_size=2",
            "--set", "rollout.reward_workers=0", "--set", "data.path=task:chain", "--set", "data.template=plain"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None and log.read_text().count("GRPO step") < 2:
                time.sleep(0.5)
            text = log.read_text()
            assert proc.poll() is None, f"the run ended before we looked: {text[-2000:]}"
            assert "GRPO step 1/40" in text and "GRPO step 2/40" in text, text[-2000:]
        finally:
            proc.kill()
            proc.wait()
