"""GRPO on 2 CPU processes (DDP over gloo, launched with accelerate) ends where one process
with the same global batch ends: same rollouts, same rewards, same weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "train" / "grpo_ddp_script.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def overrides(model: Path, out: Path) -> list[str]:
    return [f"model.name={model}", f"run.output_dir={out}", "run.steps=3", "run.save_every=0", "run.plot=false",
            "run.torch_threads=1", "data.path=task:chain", "data.task_size=64", "data.task_seed=3",
            "rollout.prompts_per_step=4", "rollout.group_size=4", "rollout.max_new_tokens=10",
            "rollout.batch_size=8", "rollout.reward_workers=0", "rewards=[{name: test_ddp_sevens}]",
            "algo.beta=0.01", "algo.aggregation=token", "optim.lr=0.01", "optim.micro_batch_size=3"]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_two_processes_match_one(tiny_random_model, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(SCRIPT), *overrides(tiny_random_model, tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    # accelerate's --cpu flag starts a single process (accelerate#2741); torchrun (--multi_gpu)
    # with ACCELERATE_USE_CPU=1 gives 2 CPU processes over gloo.
    env.update({"ACCELERATE_USE_CPU": "1", "GRPO_WORLD_FILE": str(tmp_path / "world")})
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port()), str(SCRIPT), *overrides(tiny_random_model, tmp_path / "two")]
    two = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "world").read_text().split() == ["2", "2"]

    rows = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("one", "two")}
    assert [r["step"] for r in rows["two"]] == [1, 2, 3]
    for a, b in zip(rows["one"], rows["two"]):  # the same samples, so the same rewards, every step
        assert a["reward/mean"] == pytest.approx(b["reward/mean"], abs=1e-6)
        assert a["completion/length_mean"] == b["completion/length_mean"]
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert any(r["reward/std"] > 0 for r in rows["one"]), "no reward spread: the test would prove nothing"
    w1, w2 = weights(tmp_path / "one" / "final"), weights(tmp_path / "two" / "final")
    base = weights(tiny_random_model)
    moved = max(float((w1[k] - base[k]).abs().max()) for k in w1)
    assert moved > 1e-3, "training did not move the weights"
    # Float sums run in another order on 2 processes; Adam turns those last-bit differences in
    # near-zero gradients into ~lr-sized steps, so the bound is relative to how far training moved.
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-3 * moved


@pytest.mark.parametrize("kind", ["DEEPSPEED", "FSDP"])
def test_sharded_launches_are_refused_in_one_line(kind):
    """thinkrl's checkpoints do not gather sharded states yet: such a launch must stop at once,
    not write checkpoints that hold one process's shard."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from thinkrl.errors import ConfigError
    from thinkrl.train.distributed import check_launch

    with pytest.raises(ConfigError, match="ddp.yaml"):
        check_launch(SimpleNamespace(distributed_type=DistributedType[kind]))
    check_launch(SimpleNamespace(distributed_type=DistributedType.MULTI_GPU))  # DDP goes on
