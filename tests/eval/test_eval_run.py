"""`thinkrl eval` end to end: a tiny random checkpoint on disk, real GSM8K rows, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
from typer.testing import CliRunner

from thinkrl.config import load_config
from thinkrl.errors import ConfigError
from thinkrl.eval.config import EvalConfig
from thinkrl.eval.run import run_eval


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, qwen_tokenizer_dir):
    folder = tmp_path_factory.mktemp("tiny-qwen")
    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_dir)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def eval_yaml(path, model_dir, data_dir, output_dir) -> None:
    path.write_text(yaml.safe_dump({
        "model": {"name": str(model_dir), "device": "cpu"},
        "data": {"path": str(data_dir / "gsm8k" / "test.jsonl"), "limit": 3},
        "eval": {"k": 3, "max_new_tokens": 6, "temperature": 1.0, "batch_size": 6},
        "run": {"output_dir": str(output_dir), "torch_threads": 1},
    }))


def test_run_eval_writes_consistent_results(tiny_checkpoint, data_dir, tmp_path):
    eval_yaml(tmp_path / "eval.yaml", tiny_checkpoint, data_dir, tmp_path / "out")
    cfg = load_config(EvalConfig, tmp_path / "eval.yaml")
    result = run_eval(cfg)
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert metrics == result.metrics.as_dict()
    assert yaml.safe_load((out / "config.yaml").read_text())["eval"]["k"] == 3
    assert metrics["questions"] == 3 and metrics["k"] == 3
    assert len(samples) == 3 + 9
    # The references are GSM8K's final numbers, the prompts its questions.
    first = json.loads((data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[0])
    assert samples[0]["reference"].replace(",", "") == first["answer"].split("####")[-1].strip().replace(",", "")
    assert first["question"] in samples[0]["prompt"]
    sampled = [s for s in samples if s["mode"] == "sample"]
    by_question = [[s["correct"] for s in sampled if s["question"] == q] for q in range(3)]
    assert metrics["pass_at_1"] == pytest.approx(sum(sum(r) / 3 for r in by_question) / 3)
    assert metrics["mean_response_tokens"] == pytest.approx(sum(s["tokens"] for s in sampled) / 9)
    assert metrics["truncated_rate"] == pytest.approx(sum(s["finish_reason"] == "length" for s in sampled) / 9)


def test_cli_eval_runs_and_reproduces_with_the_same_seed(tiny_checkpoint, data_dir, tmp_path):
    from thinkrl.cli import app  # imports every command's config; kept local so a broken one fails only here

    eval_yaml(tmp_path / "eval.yaml", tiny_checkpoint, data_dir, tmp_path / "a")
    runner = CliRunner()
    first = runner.invoke(app, ["eval", str(tmp_path / "eval.yaml"), "--set", "eval.greedy=false"])
    assert first.exit_code == 0, first.output
    assert "pass@1 (k=3)" in first.output
    second = runner.invoke(app, ["eval", str(tmp_path / "eval.yaml"), "--set", "eval.greedy=false",
                                 "--set", f"run.output_dir={tmp_path / 'b'}"])
    assert second.exit_code == 0, second.output
    a = [json.loads(line)["completion"] for line in (tmp_path / "a" / "samples.jsonl").read_text().splitlines()]
    b = [json.loads(line)["completion"] for line in (tmp_path / "b" / "samples.jsonl").read_text().splitlines()]
    assert a == b and len(a) == 9  # greedy=false: only the k samples


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="k=0 with eval.greedy=false"):
        load_config(EvalConfig, None, ["eval.k=0", "eval.greedy=false"])
    with pytest.raises(ConfigError, match="did you mean 'eval.top_p'"):
        load_config(EvalConfig, None, ["eval.top_pp=0.9"])
    with pytest.raises(ConfigError, match=r"^config field 'eval.output_dir' is now 'run.output_dir'"):
        load_config(EvalConfig, None, ["eval.output_dir=somewhere"])


def test_run_torch_threads_is_applied(tiny_checkpoint, data_dir, tmp_path, monkeypatch):
    asked: list[int] = []  # torch's threads stay as conftest set them
    monkeypatch.setattr("thinkrl.eval.run.set_torch_threads", asked.append)
    eval_yaml(tmp_path / "eval.yaml", tiny_checkpoint, data_dir, tmp_path / "out")
    run_eval(load_config(EvalConfig, tmp_path / "eval.yaml", ["run.torch_threads=3", "eval.k=1", "data.limit=1"]))
    assert asked == [3]
