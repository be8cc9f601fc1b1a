"""Ctrl-C or SIGTERM mid-run: the step in progress finishes, a checkpoint of it is written, the
run says where it stopped and how to resume, exits 128 + signal, and `--resume` continues
to the same steps an unbroken run takes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from launching import launch_two, script_env
from test_train_grpo import small_config
from test_train_grpo_ddp import SCRIPT as GRPO_SCRIPT
from test_train_grpo_ddp import overrides as ddp_overrides
from test_train_sft import pattern_rows, sft_config  # noqa: F401 - pattern_rows is a fixture

from thinkrl.train import grpo
from thinkrl.train.checkpoint import latest_checkpoint
from thinkrl.train.grpo import train_grpo
from thinkrl.train.interrupts import ECHO_WINDOW_S, StopSignals, TrainingInterrupted
from thinkrl.train.sft import train_sft
from thinkrl.train.tracking import read_metrics

SRC = Path(__file__).resolve().parents[2] / "src"


def steps_logged(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")]


def test_a_signal_is_noted_not_acted_on_and_its_echo_is_not_a_second_request():
    previous = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        assert not stop.requested()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # a launcher forwarding the same signal: still alive
        assert stop.requested() and stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_second_signal_after_the_echo_window_stops_at_once(tmp_path):
    code = ("import os, signal, time\n"
            "from thinkrl.train.interrupts import StopSignals, ECHO_WINDOW_S\n"
            "with StopSignals():\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(ECHO_WINDOW_S + 0.5)\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(5)\n"
            "print('survived')\n")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(SRC)})
    assert proc.returncode == -signal.SIGINT and "survived" not in proc.stdout, proc
    assert "second SIGINT: stopping now" in proc.stderr and ECHO_WINDOW_S < 5


def test_interrupted_grpo_saves_the_step_it_reached_and_resumes(tiny_random_model, tmp_path, monkeypatch):
    real, calls = grpo.step_metrics, []

    def signalled(*args, **kwargs):  # SIGINT (Ctrl-C) while step 2 is being measured
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(grpo, "step_metrics", signalled)
    with pytest.raises(TrainingInterrupted) as info:
        train_grpo(small_config(tiny_random_model, tmp_path, "run.steps=4", "run.save_every=3"))
    stop = info.value
    assert (stop.signum, stop.step, stop.exit_code) == (signal.SIGINT, 2, 130)
    assert stop.checkpoint == tmp_path / "checkpoints" / "step-000002" == latest_checkpoint(tmp_path)
    assert f"thinkrl grpo {tmp_path / 'config.yaml'} --resume" in str(stop)
    assert steps_logged(tmp_path) == [1, 2] and not (tmp_path / "final").exists()

    monkeypatch.setattr(grpo, "step_metrics", real)
    result = train_grpo(small_config(tiny_random_model, tmp_path, "run.steps=4", "run.save_every=3", "resume=true"))
    assert result.steps_done == 4 and steps_logged(tmp_path) == [1, 2, 3, 4]
    assert (tmp_path / "final" / "model.safetensors").is_file()


def test_interrupted_sft_saves_the_step_it_reached_and_resumes(tiny_random_model, pattern_rows, tmp_path):  # noqa: F811
    def on_step(step: int, metrics: dict) -> None:
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = sft_config(tiny_random_model, pattern_rows, tmp_path, "run.epochs=2", "run.save_every=0")
    with pytest.raises(TrainingInterrupted) as info:
        train_sft(cfg, on_step=lambda step, m: on_step(step, m))
    # on_step runs after the step's checkpoint check: the flag is read at step 3
    assert (info.value.step, info.value.exit_code) == (3, 143)
    assert latest_checkpoint(tmp_path).name == "step-000003" and steps_logged(tmp_path) == [1, 2, 3]
    result = train_sft(sft_config(tiny_random_model, pattern_rows, tmp_path, "run.epochs=2", "run.save_every=0",
                                  "resume=true"))
    assert result.steps_done == 8 and steps_logged(tmp_path) == list(range(1, 9))


@pytest.mark.slow
def test_sigterm_to_the_cli_exits_143_with_a_checkpoint_and_resume_continues(tiny_random_model, tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "thinkrl.cli", "grpo", "--set", f"model.name={tiny_random_model}",
            "--set", f"run.output_dir={run}", "--set", "run.steps=30", "--set", "run.save_every=0",
            "--set", "run.plot=false", "--set", "rollout.prompts_per_step=2", "--set", "rollout.group_size=2",
            "--set", "rollout.reward_workers=0", "--set", "data.path=task:chain", "--set", "data.template=plain"]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None and "GRPO step 2/30" not in log.read_text():
                time.sleep(0.2)
            assert proc.poll() is None, log.read_text()[-2000:]
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
        finally:
            proc.kill()
    text = log.read_text()
    assert code == 143, text[-2000:]
    assert "GRPO: new run; run folder" in text and f"model {tiny_random_model}" in text
    stopped = int(text.split("stopped by SIGTERM after step ")[1].split(";")[0])
    assert 2 <= stopped < 30 and latest_checkpoint(run).name == f"step-{stopped:06d}"
    assert f"resume with: thinkrl grpo {run / 'config.yaml'} --resume" in text
    assert steps_logged(run) == list(range(1, stopped + 1))

    done = subprocess.run([sys.executable, "-m", "thinkrl.cli", "grpo", str(run / "config.yaml"), "--resume",
                           "--set", "run.steps=" + str(stopped + 2)], check=False, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"GRPO: resumed from step {stopped}" in done.stdout
    assert f"GRPO: finished step {stopped + 2} in" in done.stdout and f"final model {run / 'final'}" in done.stdout
    assert steps_logged(run) == list(range(1, stopped + 3))


@pytest.mark.slow
def test_a_signal_to_one_launched_process_stops_both_at_the_same_step(tiny_random_model, tmp_path):
    run = tmp_path / "run"
    args = [*ddp_overrides(tiny_random_model, run), "run.steps=4", "run.save_every=0"]
    proc = launch_two(GRPO_SCRIPT, args, {"GRPO_SIGTERM_AT": "2:1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    for rank in (0, 1):
        assert f"rank {rank}: stopped by SIGTERM after step 2" in out, out[-3000:]
    assert latest_checkpoint(run).name == "step-000002" and steps_logged(run) == [1, 2]
    done = subprocess.run([sys.executable, str(GRPO_SCRIPT), *args, "resume=true"], check=False, capture_output=True, text=True,
                          timeout=300, env=script_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert steps_logged(run) == [1, 2, 3, 4]
