"""GRPO on 2 CPU processes (launched with accelerate, DDP or FSDP2 over gloo) ends where one
process with the same global batch ends: same rollouts, same rewards, same weights; and its
checkpoints are the one-process kind, so either launch resumes the other's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from launching import launch_two, script_env
from safetensors.torch import load_file

SCRIPT = Path(__file__).resolve().parent / "grpo_ddp_script.py"


def overrides(model: Path, out: Path) -> list[str]:
    return [f"model.name={model}", f"run.output_dir={out}", "run.steps=3", "run.save_every=2", "run.plot=false",
            "run.torch_threads=1", "data.path=task:chain", "data.task_size=64", "data.task_seed=3",
            "rollout.prompts_per_step=4", "rollout.group_size=4", "rollout.max_new_tokens=10",
            "rollout.batch_size=8", "rollout.reward_workers=0", "rewards=[{name: test_ddp_sevens}]",
            "algo.beta=0.01", "algo.aggregation=token", "optim.lr=0.01", "optim.micro_batch_size=3",
            "algo.curriculum=pass_rate", "algo.entropy_coef=0.01"]  # processes agree on the draw; bonus under FSDP


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert sorted(a) == sorted(b)
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process(tiny_random_model, tmp_path_factory) -> Path:
    """The reference: the same run in one plain process."""
    out = tmp_path_factory.mktemp("grpo-one") / "run"
    proc = subprocess.run([sys.executable, str(SCRIPT), *overrides(tiny_random_model, out)],
                          check=False, capture_output=True, text=True, timeout=300, env=script_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sharding, launch_type", [("ddp", "MULTI_CPU"), ("fsdp", "FSDP")])
def test_two_processes_match_one(tiny_random_model, one_process, tmp_path, sharding, launch_type):
    out = tmp_path / "two"
    two = launch_two(SCRIPT, overrides(tiny_random_model, out), {"GRPO_WORLD_FILE": str(tmp_path / "world")}, sharding)
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "world").read_text().split() == [f"2:{launch_type}"] * 2

    rows = {"one": metrics(one_process), "two": metrics(out)}
    assert [r["step"] for r in rows["two"]] == [1, 2, 3]
    for a, b in zip(rows["one"], rows["two"]):  # the same samples, so the same rewards, every step
        assert a["reward/mean"] == pytest.approx(b["reward/mean"], abs=1e-6)
        assert a["completion/length_mean"] == b["completion/length_mean"]
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert any(r["reward/std"] > 0 for r in rows["one"]), "no reward spread: the test would prove nothing"
    w1, w2 = weights(one_process / "final"), weights(out / "final")
    moved = max_diff(w1, weights(tiny_random_model))
    assert moved > 1e-3, "training did not move the weights"
    # Float sums run in another order on 2 processes; Adam turns those last-bit differences in
    # near-zero gradients into ~lr-sized steps, so the bound is relative to how far training moved.
    assert max_diff(w1, w2) < 1e-3 * moved
    # Checkpoints hold the whole model and optimizer state, as a one-process run writes them.
    ckpt_one, ckpt_two = one_process / "checkpoints" / "step-000002", out / "checkpoints" / "step-000002"
    assert max_diff(weights(ckpt_one), weights(ckpt_two)) < 1e-3 * moved
    opt_one, opt_two = (torch.load(c / "optimizer.pt", weights_only=True) for c in (ckpt_one, ckpt_two))
    assert opt_one["param_groups"] == opt_two["param_groups"]
    for i, state in opt_one["state"].items():
        assert state["exp_avg_sq"].shape == opt_two["state"][i]["exp_avg_sq"].shape
        assert torch.allclose(state["exp_avg_sq"], opt_two["state"][i]["exp_avg_sq"], atol=1e-9)


@pytest.mark.slow
def test_batch_whitened_advantages_under_a_launch_match_one_process(tiny_random_model, tmp_path):
    """REINFORCE++-baseline whitens over the whole batch: two processes must whiten over both
    shares, not each over its own, to train as one process does."""
    settings = ["algo.advantage=reinforce_pp_baseline", "run.steps=2"]
    one = tmp_path / "one"
    proc = subprocess.run([sys.executable, str(SCRIPT), *overrides(tiny_random_model, one), *settings],
                          check=False, capture_output=True, text=True, timeout=300, env=script_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = launch_two(SCRIPT, [*overrides(tiny_random_model, tmp_path / "two"), *settings], {}, "ddp")
    assert two.returncode == 0, two.stderr[-3000:]
    for a, b in zip(metrics(one), metrics(tmp_path / "two")):
        assert a["reward/mean"] == pytest.approx(b["reward/mean"], abs=1e-6)
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)


@pytest.mark.slow
def test_fsdp_resumes_a_one_process_checkpoint(tiny_random_model, one_process, tmp_path):
    """Cut the one-process run back to its step-2 checkpoint and finish it under FSDP: the
    shards take the whole optimizer state, so step 3 lands where the unbroken run landed."""
    run = tmp_path / "run"
    shutil.copytree(one_process, run)
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoints" / "step-000003")
    (run / "checkpoints" / "latest").write_text("step-000002\n")
    proc = launch_two(SCRIPT, [*overrides(tiny_random_model, run), "resume=true"], {}, "fsdp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["step"] for r in metrics(run)] == [1, 2, 3]
    assert metrics(run)[2]["loss"] == pytest.approx(metrics(one_process)[2]["loss"], abs=1e-5)
    # A fresh optimizer would move every weight ~lr (0.01) at step 3; the restored one does not.
    assert max_diff(weights(one_process / "final"), weights(run / "final")) < 1e-5


@pytest.mark.slow
def test_fsdp_processes_sample_different_lengths_then_train(tiny_random_model, tmp_path):
    """GRPO's processes sample different prompts, so they run different numbers of forward
    passes; under FSDP the training that follows must still be that of the mean loss over
    both processes' samples, as one process computes it from the same samples."""
    from thinkrl.models import load_model

    proc = launch_two(Path(__file__).resolve().parent / "fsdp_generate_script.py", [str(tiny_random_model), str(tmp_path)],
                      {}, "fsdp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    by_step = [{r["rank"]: r["ids"] for r in rows if r["step"] == step} for step in (0, 1)]
    assert all(len(s[0]) < len(s[1]) for s in by_step), "the processes sampled the same lengths"

    model = load_model(str(tiny_random_model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for samples in by_step:  # the gradient averaged over processes, from one process
        losses = [model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss for ids in samples.values()]
        (sum(losses) / 2).backward()
        optimizer.step()
        optimizer.zero_grad()
    trained, base = weights(tmp_path / "final"), weights(tiny_random_model)
    expected = {k: v.detach() for k, v in model.state_dict().items() if k in trained}
    moved = max_diff(expected, base)
    assert moved > 1e-3 and max_diff(expected, trained) < 1e-3 * moved


def launch(kind: str, fsdp_version: int = 2):
    from accelerate.utils import DistributedType

    return SimpleNamespace(distributed_type=DistributedType[kind],
                           state=SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=fsdp_version)))


@pytest.mark.parametrize("kind, version, lora, message", [
    ("DEEPSPEED", 2, False, "fsdp.yaml"),
    ("FSDP", 1, False, "fsdp_version: 2"),
    ("FSDP", 2, True, "ddp.yaml"),
])
def test_launches_thinkrl_cannot_checkpoint_are_refused_in_one_line(kind, version, lora, message):
    from thinkrl.errors import ConfigError
    from thinkrl.train.distributed import check_launch

    with pytest.raises(ConfigError, match=message):
        check_launch(launch(kind, version), lora=lora)


def test_ddp_and_fsdp2_launches_go_on():
    from thinkrl.train.distributed import check_launch

    check_launch(launch("MULTI_GPU"), lora=True)
    check_launch(launch("FSDP"), lora=False)


def test_optimizer_state_keys_convert_between_ids_and_names():
    from thinkrl.train.sharding import optimizer_state_by_index, optimizer_state_by_name

    names = ["a.weight", "b.weight", "c.bias"]
    by_index = {"state": {0: {"step": 1}, 2: {"step": 2}}, "param_groups": [{"lr": 0.1, "params": [0, 1]}, {"lr": 0.2, "params": [2]}]}
    by_name = optimizer_state_by_name(by_index, names)
    assert by_name["state"] == {"a.weight": {"step": 1}, "c.bias": {"step": 2}}
    assert [g["params"] for g in by_name["param_groups"]] == [["a.weight", "b.weight"], ["c.bias"]]
    assert optimizer_state_by_index(by_name, names) == by_index
