"""The SFT loop on tiny real models: it learns a pattern, LoRA trains only the adapter, an
interrupted run resumes to the unbroken result, gradient accumulation and 2 processes
(accelerate launch) give the same weights as one big batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from launching import launch_two
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from thinkrl.config import load_config
from thinkrl.errors import ConfigError
from thinkrl.rollout.base import SamplingParams
from thinkrl.rollout.transformers_engine import TransformersEngine
from thinkrl.train.sft import train_sft
from thinkrl.train.sft_config import SFTConfig
from thinkrl.train.tracking import read_metrics

REPO = Path(__file__).resolve().parents[2]
TOPICS = {"sky": "<think>sky is up</think><answer>blue</answer>",
          "grass": "<think>grass is low</think><answer>green</answer>"}


@pytest.fixture(scope="module")
def pattern_rows(tmp_path_factory) -> Path:
    """30 rows of a fixed pattern: the response depends on the prompt's first word only."""
    path = tmp_path_factory.mktemp("sft-data") / "rows.jsonl"
    rows = [{"prompt": f"User: {topic} {i}. Assistant:", "response": TOPICS[topic]}
            for i in range(15) for topic in TOPICS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sft_config(model_dir: Path, data: Path, run_dir: Path, *overrides: str) -> SFTConfig:
    base = [f"model.name={model_dir}", f"data.path={data}", f"run.output_dir={run_dir}", "run.batch_size=8",
            "run.micro_batch_size=4", "run.epochs=2", "optim.lr=0.01", "optim.schedule=constant",
            "run.plot=false", "run.torch_threads=1"]
    return load_config(SFTConfig, None, base + list(overrides))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_sft_learns_a_pattern_and_greedy_reproduces_it(tiny_random_model, pattern_rows, tmp_path):
    cfg = sft_config(tiny_random_model, pattern_rows, tmp_path / "run", "run.epochs=10", "run.save_every=20",
                     "data.eval_fraction=0.1", "run.plot=true")
    result = train_sft(cfg)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 41)) and result.steps_done == 40  # 27 rows / 8 -> 4 steps x 10
    assert rows[0]["loss"] > 4.0 and rows[-1]["loss"] < 0.05 * rows[0]["loss"]
    assert rows[-1]["eval_loss"] < 0.1 and rows[-1]["epoch"] == 10
    assert {"lr", "grad_norm", "tokens", "loss_tokens", "tokens_per_s"} <= rows[-1].keys()
    assert (tmp_path / "run" / "plots" / "loss.png").is_file()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*")) == ["step-000020", "step-000040"]

    model = AutoModelForCausalLM.from_pretrained(result.final_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.final_model_dir)
    engine = TransformersEngine(model, tokenizer)
    prompts = [f"User: {topic} 3. Assistant:" for topic in TOPICS]
    completions = engine.generate(prompts, SamplingParams(max_new_tokens=60, temperature=0))
    assert [c.text for c in completions] == list(TOPICS.values())
    assert all(c.finish_reason == "stop" for c in completions)  # it learnt the eos too


def test_lora_trains_only_the_adapter_and_final_is_a_plain_checkpoint(tiny_random_model, pattern_rows, tmp_path):
    cfg = sft_config(tiny_random_model, pattern_rows, tmp_path / "run", "model.lora.enabled=true", "model.lora.r=4",
                     "model.lora.target_modules=[q_proj,v_proj]", "model.gradient_checkpointing=true")
    result = train_sft(cfg)
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000008"
    assert (checkpoint / "adapter_model.safetensors").is_file() and not (checkpoint / "model.safetensors").exists()
    base, final = weights(tiny_random_model), weights(result.final_model_dir)
    changed = {k for k in base if not torch.equal(base[k], final[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    model = AutoModelForCausalLM.from_pretrained(result.final_model_dir)  # merged: no peft needed
    assert type(model).__name__ == "LlamaForCausalLM"


def test_gradient_accumulation_matches_one_big_batch(tiny_random_model, pattern_rows, tmp_path):
    """The loss is normalised over the step's tokens, so splitting a batch changes nothing."""
    whole = train_sft(sft_config(tiny_random_model, pattern_rows, tmp_path / "a", "run.micro_batch_size=8",
                                 "run.epochs=1"))
    split = train_sft(sft_config(tiny_random_model, pattern_rows, tmp_path / "b", "run.micro_batch_size=2",
                                 "run.epochs=1"))
    assert max_diff(weights(whole.final_model_dir), weights(split.final_model_dir)) < 1e-5
    assert max_diff(weights(whole.final_model_dir), weights(tiny_random_model)) > 1e-3
    # Adam hides a wrongly scaled gradient from the weights; the logged norm does not.
    norms = [[r["grad_norm"] for r in read_metrics(tmp_path / run / "metrics.jsonl")] for run in "ab"]
    assert norms[0] == pytest.approx(norms[1], rel=1e-4)


def test_packing_trains(tiny_random_model, pattern_rows, tmp_path):
    result = train_sft(sft_config(tiny_random_model, pattern_rows, tmp_path / "run", "data.packing=true",
                                  "data.max_length=128", "run.batch_size=2", "run.micro_batch_size=1", "run.epochs=4"))
    assert result.data.packed_rows < 30
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]


class Interrupted(Exception):
    pass


def test_resume_after_interruption_matches_unbroken_run(tiny_random_model, pattern_rows, tmp_path):
    extra = ("run.epochs=3", "run.save_every=3", "optim.schedule=cosine", "optim.warmup_steps=2")
    unbroken = train_sft(sft_config(tiny_random_model, pattern_rows, tmp_path / "unbroken", *extra))

    def stop_at_step_7(step: int, metrics: dict) -> None:
        if step == 7:  # after the step-6 checkpoint: step 7's work is lost and redone
            raise Interrupted

    run_dir = tmp_path / "broken"
    with pytest.raises(Interrupted):
        train_sft(sft_config(tiny_random_model, pattern_rows, run_dir, *extra), on_step=stop_at_step_7)
    resumed = train_sft(sft_config(tiny_random_model, pattern_rows, run_dir, *extra, "resume=true"))

    assert resumed.steps_done == unbroken.steps_done == 12
    assert max_diff(weights(unbroken.final_model_dir), weights(resumed.final_model_dir)) < 1e-5
    broken_rows, unbroken_rows = read_metrics(run_dir / "metrics.jsonl"), read_metrics(tmp_path / "unbroken" / "metrics.jsonl")
    assert [r["step"] for r in broken_rows] == list(range(1, 13))
    for a, b in zip(broken_rows, unbroken_rows):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5) and a["lr"] == pytest.approx(b["lr"])


def test_batch_must_split_into_micro_batches(tiny_random_model, pattern_rows, tmp_path):
    with pytest.raises(ConfigError, match="micro_batch_size=3 must divide run.batch_size=8"):
        sft_config(tiny_random_model, pattern_rows, tmp_path, "run.micro_batch_size=3")


@pytest.mark.slow
@pytest.mark.parametrize("sharding, launch_type", [("ddp", "MULTI_CPU"), ("fsdp", "FSDP")])
def test_two_processes_match_one(tiny_random_model, pattern_rows, tmp_path, sharding, launch_type):
    """`accelerate launch` with 2 CPU processes (DDP, or FSDP2 from configs/accelerate/fsdp.yaml;
    see launching.py) and the same global batch ends at the weights one process gets, and
    the checkpoint holds the whole model, as one process writes it."""
    # 27 training rows: 4 steps per epoch, the last one short; the eval loss (main process
    # only, so under FSDP on unsharded weights) every 3 steps, in the middle of training.
    overrides = ["run.micro_batch_size=2", "run.epochs=2", "run.save_every=4", "data.eval_fraction=0.1", "run.eval_every=3"]
    one = train_sft(sft_config(tiny_random_model, pattern_rows, tmp_path / "one", *overrides))
    args = [f"model.name={tiny_random_model}", f"data.path={pattern_rows}", f"run.output_dir={tmp_path / 'two'}",
            "run.batch_size=8", "optim.lr=0.01", "optim.schedule=constant", "run.plot=false", "run.torch_threads=1",
            *overrides]
    proc = launch_two(REPO / "tests" / "train" / "sft_ddp_script.py", args, {"SFT_WORLD_FILE": str(tmp_path / "world")},
                      sharding)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "world").read_text().split() == [f"2:{launch_type}"] * 2  # both ranks saw the launch
    assert max_diff(weights(one.final_model_dir), weights(tmp_path / "two" / "final")) < 1e-5
    step4 = Path("checkpoints") / "step-000004"
    assert max_diff(weights(tmp_path / "one" / step4), weights(tmp_path / "two" / step4)) < 1e-5
    one_rows, two_rows = read_metrics(tmp_path / "one" / "metrics.jsonl"), read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["loss"] for r in two_rows] == pytest.approx([r["loss"] for r in one_rows], abs=1e-5)
    assert [r["grad_norm"] for r in two_rows] == pytest.approx([r["grad_norm"] for r in one_rows], rel=1e-4)
    evals = [[r["eval_loss"] for r in rows if "eval_loss" in r] for rows in (one_rows, two_rows)]
    assert len(evals[0]) == 3 and evals[1] == pytest.approx(evals[0], abs=1e-5)
