"""GRPO on a tiny real model: one step moves the policy toward the rewarded samples; the
LoRA and reference paths run; a SIGKILLed run resumes to the result an unbroken run gets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from thinkrl.config import load_config
from thinkrl.data.loaders import load_examples
from thinkrl.data.templates import render_prompt
from thinkrl.errors import ConfigError
from thinkrl.rewards import RewardResult, register
from thinkrl.rollout.transformers_engine import TransformersEngine
from thinkrl.train.config import GRPOConfig
from thinkrl.train.grpo import collect_rollout, train_grpo, update_policy
from thinkrl.train.model_setup import build_optimizer, load_policy
from thinkrl.train.policy import build_policy_batch, frozen_logprobs
from thinkrl.train.rollouts import PromptOrder
from thinkrl.train.tracking import read_metrics


@register("count_sevens", isolate=False)
def count_sevens(completion: str, example, **options) -> RewardResult:
    """A test reward with variance even for a random model: the share of '7's written."""
    share = completion.count("7") / max(len(completion), 1)
    return RewardResult(score=share, reason="some" if share else "none")


def small_config(model_dir: Path, run_dir: Path, *overrides: str) -> GRPOConfig:
    defaults = ["optim.lr=0.001", "run.steps=2", "run.save_every=1"]
    return load_config(GRPOConfig, None, _overrides(model_dir, run_dir) + defaults + list(overrides))


def objective(model, completions, advantages, pad_id) -> float:
    """GRPO's sequence-level surrogate at ratio 1: sum_i A_i * mean_t log p(o_it)."""
    batch = build_policy_batch(completions, pad_id)
    logp = frozen_logprobs(model, batch, temperature=1.0)
    mean_logp = (logp * batch.loss_mask).sum(1) / batch.loss_mask.sum(1).clamp(min=1)
    return float((advantages * mean_logp).sum())


def test_one_step_moves_policy_toward_higher_reward(tiny_random_model, tmp_path):
    cfg = small_config(tiny_random_model, tmp_path)
    policy = load_policy(cfg.model, need_reference=False)
    examples = load_examples(cfg.data)
    prompts = [render_prompt(ex, cfg.data.template, policy.tokenizer) for ex in examples]
    engine = TransformersEngine(policy.model, policy.tokenizer)
    rollout = collect_rollout(engine, examples, prompts, PromptOrder(len(examples), 0), step=1, cfg=cfg)
    assert rollout.advantages.abs().sum() > 0, "the test reward must give the group some variance"
    best, worst = int(rollout.advantages.argmax()), int(rollout.advantages.argmin())
    assert rollout.rewards[best] > rollout.rewards[worst]

    pad = policy.tokenizer.pad_token_id
    before = objective(policy.model, rollout.completions, rollout.advantages, pad)
    weights = [p.detach().clone() for p in policy.model.parameters()]
    optimizer, scheduler = build_optimizer(policy.model, cfg.optim, total_updates=1)
    from accelerate import Accelerator

    stats = update_policy(Accelerator(), policy.model, None, optimizer, scheduler, rollout, pad, cfg)
    after = objective(policy.model, rollout.completions, rollout.advantages, pad)

    assert any(not torch.equal(w, p) for w, p in zip(weights, policy.model.parameters()))
    assert after > before, "the update must raise the advantage-weighted log-likelihood"
    assert stats["clip_fraction"] == 0.0  # mu=1: ratio is exactly 1
    assert stats["grad_norm"] > 0


def test_train_grpo_writes_metrics_checkpoints_and_a_loadable_model(tiny_random_model, tmp_path):
    cfg = small_config(tiny_random_model, tmp_path, "run.plot=true", "algo.mu=2", "optim.updates_per_pass=2")
    result = train_grpo(cfg)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward/mean", "reward/std", "reward/count_sevens", "completion/length_mean", "completion/length_max",
                "completion/truncated_share", "zero_variance_share", "clip_fraction", "entropy", "lr", "grad_norm",
                "tokens_per_s", "time/generation_s", "time/train_s"):
        assert key in rows[-1], key
    assert (tmp_path / "checkpoints" / "step-000002" / "trainer_state.json").is_file()
    assert (tmp_path / "samples.jsonl").is_file()
    assert list((tmp_path / "plots").glob("*.png"))
    model = AutoModelForCausalLM.from_pretrained(result.final_model_dir)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_lora_with_reference_trains_only_the_adapter(tiny_random_model, tmp_path):
    cfg = small_config(tiny_random_model, tmp_path, "model.lora.enabled=true", "model.lora.r=4",
                       "algo.beta=0.05", "algo.mu=2", "run.steps=1")
    policy = load_policy(cfg.model, need_reference=True)
    assert policy.reference is None  # LoRA: the base with the adapter off is the reference
    base_before = {n: p.detach().clone() for n, p in policy.model.named_parameters() if "lora_" not in n}
    result = train_grpo(cfg)
    row = read_metrics(tmp_path / "metrics.jsonl")[-1]
    assert row["kl"] >= 0.0
    trained = AutoModelForCausalLM.from_pretrained(result.final_model_dir)  # merged: a plain checkpoint
    assert trained is not None
    assert all(torch.equal(p, base_before[n]) for n, p in policy.model.named_parameters() if n in base_before)


def test_beta_with_a_full_reference_model_reports_kl(tiny_random_model, tmp_path):
    cfg = small_config(tiny_random_model, tmp_path, "algo.beta=0.1", "algo.mu=2", "run.steps=2")
    train_grpo(cfg)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows[0]["kl"] >= 0.0 and rows[-1]["kl"] >= 0.0


def test_bad_configs_are_one_line_errors(tiny_random_model, tmp_path):
    with pytest.raises(ConfigError, match=r"algo\.bta.*did you mean 'algo\.beta'"):
        small_config(tiny_random_model, tmp_path, "algo.bta=0.1")
    with pytest.raises(ConfigError, match="updates_per_pass"):
        small_config(tiny_random_model, tmp_path, "optim.updates_per_pass=3")
    with pytest.raises(ConfigError, match="rollout.group_size"):
        small_config(tiny_random_model, tmp_path, "rollout.group_size=1")


RUNNER = """
import sys
from thinkrl.config import load_config
from thinkrl.rewards import RewardResult, register
from thinkrl.train.config import GRPOConfig
from thinkrl.train.grpo import train_grpo

@register("count_sevens", isolate=False)
def count_sevens(completion, example, **options):
    return RewardResult(score=completion.count("7") / max(len(completion), 1), reason="x")

train_grpo(load_config(GRPOConfig, None, sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_unbroken_run(tiny_random_model, tmp_path):
    steps = ["run.steps=6", "run.save_every=2", "optim.lr=0.01"]
    unbroken = small_config(tiny_random_model, tmp_path / "unbroken", *steps)
    train_grpo(unbroken)

    broken_dir = tmp_path / "broken"
    args = _overrides(tiny_random_model, broken_dir) + steps
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (broken_dir / "checkpoints" / "step-000004").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run must be killed mid-training, not finish"
    assert (broken_dir / "checkpoints" / "step-000004").is_dir()
    assert not (broken_dir / "final").exists()

    resumed = small_config(tiny_random_model, broken_dir, *steps, "resume=true")
    result = train_grpo(resumed)
    assert result.steps_done == 6
    got, want = read_metrics(broken_dir / "metrics.jsonl"), read_metrics(tmp_path / "unbroken" / "metrics.jsonl")
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(got, want):
        assert a["reward/mean"] == pytest.approx(b["reward/mean"], abs=1e-6)
    samples = [json.loads(line) for line in (broken_dir / "samples.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (tmp_path / "unbroken" / "samples.jsonl").read_text().splitlines()]
    assert [(s["step"], s["prompt"]) for s in samples] == [(s["step"], s["prompt"]) for s in expected]
    final_a = AutoModelForCausalLM.from_pretrained(result.final_model_dir)
    final_b = AutoModelForCausalLM.from_pretrained(tmp_path / "unbroken" / "final")
    for p, q in zip(final_a.parameters(), final_b.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def test_bfloat16_trains_in_mixed_precision_so_small_updates_land(tiny_random_model, tmp_path):
    """At lr 1e-5, an Adam step (~1e-5) is below half a bf16 step of these weights (~4e-5): bf16
    weights would round almost all of it away. The trained weights are fp32 instead, and the
    forward/backward runs under bf16 autocast."""
    policy = load_policy(load_config(GRPOConfig, None, [f"model.name={tiny_random_model}", "model.dtype=bfloat16"]).model,
                         need_reference=True)
    assert {p.dtype for p in policy.model.parameters()} == {torch.float32}
    assert {p.dtype for p in policy.reference.parameters()} == {torch.bfloat16}
    result = train_grpo(small_config(tiny_random_model, tmp_path, "model.dtype=bfloat16", "optim.lr=1e-5",
                                     "algo.beta=0.001", "run.save_every=0"))
    key = "model.layers.0.self_attn.q_proj.weight"
    before = load_file(tiny_random_model / "model.safetensors")[key]
    after = load_file(result.final_model_dir / "model.safetensors")[key]
    before = before.to(after.dtype)  # a bf16-trained model would be compared on its own grid
    assert float((after != before).float().mean()) > 0.9


def test_runs_of_different_precision_follow_each_other_in_one_process():
    """A pipeline runs its stages in one process: an fp32 stage, then a bf16 one, then fp32."""
    from thinkrl.train.config import ModelConfig
    from thinkrl.train.model_setup import make_accelerator

    assert [make_accelerator(ModelConfig(dtype=d)).mixed_precision for d in ("float32", "bfloat16", "float32")] == \
        ["no", "bf16", "no"]


class HalfFlatEngine:
    """Prompt "p<i>": even i gives G identical answers (a flat group), odd i G different ones."""

    def generate(self, prompts, params):
        from thinkrl.rollout.base import Completion

        out = []
        for k, prompt in enumerate(prompts):
            flat = int(prompt[1:]) % 2 == 0
            out += [Completion(prompt_index=k, text="77" if flat else "7" * j + "x" * (3 - j)) for j in range(params.n)]
        return out


@pytest.mark.parametrize("world", [1, 2])
def test_dynamic_sampling_under_a_launch_tops_up_to_whole_shares(tiny_random_model, tmp_path, world):
    """One process trains on the groups with variance only; under a launch every process takes
    exactly its share (flat groups top it up, advantage 0), so all run the same passes."""
    cfg = small_config(tiny_random_model, tmp_path, "algo.dynamic_sampling=true", "algo.max_refill_rounds=0",
                       "rollout.reward_workers=0")
    examples = load_examples(cfg.data)
    prompts = [f"p{i}" for i in range(len(examples))]
    order = PromptOrder(len(examples), 0)
    share = cfg.rollout.prompts_per_step // world
    topped_up = 0
    for rank in range(world):
        rollout = collect_rollout(HalfFlatEngine(), examples, prompts, order, step=1, cfg=cfg, rank=rank, world=world)
        picked = [examples.index(ex) for ex in rollout.examples]
        varied = [i for i in order.take(0, cfg.rollout.prompts_per_step)[rank * share:(rank + 1) * share] if i % 2]
        if world == 1:
            assert picked == varied  # only the groups with variance (DAPO's dynamic sampling)
        else:
            assert len(picked) == share and picked[:len(varied)] == varied
            flat_rows = [g for g, i in enumerate(picked) if i % 2 == 0]
            for g in flat_rows:
                assert rollout.advantages[g * 4:(g + 1) * 4].abs().sum() == 0
            topped_up += len(flat_rows)
    assert world == 1 or topped_up > 0, "no process had a flat group: the test would prove nothing"


def _overrides(model_dir: Path, run_dir: Path) -> list[str]:
    return [
        f"model.name={model_dir}", "data.path=task:chain", "data.task_size=64", "data.task_seed=7",
        "rollout.prompts_per_step=4", "rollout.group_size=4", "rollout.max_new_tokens=12",
        "optim.micro_batch_size=8", "rewards=[{name: count_sevens}]",
        f"run.output_dir={run_dir}", "run.plot=false",
    ]
