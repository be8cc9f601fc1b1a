"""A prompt that does not leave max_new_tokens of the model's positions is never run past
them: GRPO skips (counted in its metrics), truncates or refuses it, SFT does the same for
long rows, and the eval report says how many prompts were over and what happened to them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from transformers import AutoConfig, AutoTokenizer

from thinkrl.config import load_config
from thinkrl.data.context import (
    ContextLimit,
    context_limit,
    fit_prompts,
    left_truncate,
    model_positions,
    prompt_decoder,
    prompt_encoder,
)
from thinkrl.data.example import Example
from thinkrl.errors import ConfigError
from thinkrl.eval.config import EvalSettings
from thinkrl.eval.evaluate import evaluate
from thinkrl.eval.report import metrics_table, write_results
from thinkrl.models import load_model, load_tokenizer
from thinkrl.rewards import RewardResult, register
from thinkrl.rollout.transformers_engine import TransformersEngine
from thinkrl.train.config import GRPOConfig
from thinkrl.train.grpo import load_prompts, train_grpo
from thinkrl.train.sft_config import SFTDataConfig
from thinkrl.train.sft_data import load_sft_data
from thinkrl.train.tracking import read_metrics

# The tiny tokenizer is one token per character: "User: {q}. Assistant:" is len(q) + 18
# characters, plus the bos the engine puts in front.
SHORT, LONG = "1+2=?", "9" * 300


@register("long_prompt_test_digits", isolate=False)
def _digits(completion: str, example, **options) -> RewardResult:
    share = sum(ch.isdigit() for ch in completion) / max(len(completion), 1)
    return RewardResult(score=share, reason="some" if share else "none")


@pytest.fixture(scope="module")
def tiny_tok(tiny_random_model):
    return AutoTokenizer.from_pretrained(tiny_random_model)


def write_rows(path: Path, questions: list[str]) -> Path:
    path.write_text("".join(json.dumps({"question": q, "answer": "3", "kind": "math"}) + "\n" for q in questions))
    return path


def grpo_config(model_dir: Path, data: Path, run_dir: Path, *overrides: str) -> GRPOConfig:
    return load_config(GRPOConfig, None, [
        f"model.name={model_dir}", f"data.path={data}", "data.preset=none", "data.template=r1_zero_short",
        "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=16",
        "optim.micro_batch_size=4", "rewards=[{name: long_prompt_test_digits}]",
        f"run.output_dir={run_dir}", "run.plot=false", "run.steps=1", "run.save_every=0", *overrides])


# ---------------------------------------------------------------- the shared logic


def test_model_positions_come_from_the_config_then_a_sane_tokenizer(tiny_random_model, tiny_tok) -> None:
    config = AutoConfig.from_pretrained(tiny_random_model)
    assert model_positions(config, tiny_tok) == 256  # the config wins over the tokenizer's 512
    assert model_positions(None, tiny_tok) == 512
    tiny_tok_unbounded = AutoTokenizer.from_pretrained(tiny_random_model, model_max_length=int(1e30))
    assert model_positions(None, tiny_tok_unbounded) is None  # transformers' "no limit" placeholder
    with pytest.raises(ConfigError, match=r"rollout\.max_new_tokens=256 leaves no room for a prompt in the "
                                          r"model's 256 positions"):
        context_limit(256, 256, "rollout.max_new_tokens")


def test_truncate_keeps_the_end_and_fits_the_budget_exactly(tiny_tok, qwen_tokenizer_dir) -> None:
    encode, decode = prompt_encoder(tiny_tok), prompt_decoder(tiny_tok)
    prompt = f"User: {LONG}1+2=?. Assistant:"
    cut = left_truncate(prompt, encode, decode, budget=40)
    ids = encode(cut)
    assert len(ids) == 40 and ids[0] == tiny_tok.bos_token_id and ids.count(tiny_tok.bos_token_id) == 1
    assert prompt.endswith(cut) and cut.endswith("1+2=?. Assistant:")

    qwen = AutoTokenizer.from_pretrained(qwen_tokenizer_dir)  # byte-level BPE, no bos, a chat template
    chat = qwen.apply_chat_template([{"role": "user", "content": "Größe? " * 80 + "Wie viel ist 2+3?"}],
                                    tokenize=False, add_generation_prompt=True)
    q_encode, q_decode = prompt_encoder(qwen), prompt_decoder(qwen)
    cut = left_truncate(chat, q_encode, q_decode, budget=30)
    assert len(q_encode(cut)) <= 30
    assert cut.endswith("Wie viel ist 2+3?<|im_end|>\n<|im_start|>assistant\n")


def test_fit_prompts_applies_each_policy(tiny_tok) -> None:
    encode, decode = prompt_encoder(tiny_tok), prompt_decoder(tiny_tok)
    prompts = ["short", "x" * 100, "y" * 50, "fits"]
    limit = ContextLimit(positions=64, max_new_tokens=24)  # 40 prompt tokens, bos included

    skipped = fit_prompts(prompts, encode, decode, limit, "skip", "rows.jsonl")
    assert skipped.kept == [0, 3] and skipped.prompts == ["short", "fits"]
    assert (skipped.report.over, skipped.report.skipped, skipped.report.longest) == (2, 2, 101)
    assert skipped.report.summary() == ("rows.jsonl: 2 of 4 prompts are longer than the 40 tokens the model's 64 "
                                        "positions less 24 new tokens leave (longest 101): skipped")

    truncated = fit_prompts(prompts, encode, decode, limit, "truncate", "rows.jsonl")
    assert truncated.kept == [0, 1, 2, 3] and truncated.report.truncated == 2
    assert truncated.prompts[1] == "x" * 39 and truncated.prompts[0] == "short"

    with pytest.raises(ConfigError, match=r"rows\.jsonl: 2 of 4 prompts are longer than the 40 tokens .* "
                                          r"\(longest 101\); set data\.on_long_prompt=skip or truncate"):
        fit_prompts(prompts, encode, decode, limit, "error", "rows.jsonl")
    with pytest.raises(ConfigError, match="every prompt is too long"):
        fit_prompts(["x" * 100], encode, decode, limit, "skip", "rows.jsonl")
    unknown = fit_prompts(prompts, encode, decode, None, "error", "rows.jsonl")  # no known limit: nothing to do
    assert unknown.kept == [0, 1, 2, 3] and unknown.report.over == 0


# ---------------------------------------------------------------- GRPO


def test_grpo_skips_truncates_or_refuses_long_prompts(tiny_random_model, tiny_tok, tmp_path, capsys) -> None:
    data = write_rows(tmp_path / "rows.jsonl", [SHORT, LONG, "2+2=?"])
    config = AutoConfig.from_pretrained(tiny_random_model)

    examples, prompts, metrics = load_prompts(grpo_config(tiny_random_model, data, tmp_path), tiny_tok, config)
    assert [e.prompt for e in examples] == [SHORT, "2+2=?"] and len(prompts) == 2
    assert metrics == {"data/long_prompts_skipped": 1, "data/long_prompts_truncated": 0}
    err = capsys.readouterr().err
    assert f"data: {data}: 1 of 3 prompts are longer than the 240 tokens the model's 256 positions less 16 " \
           "new tokens leave (longest 319): skipped" in err

    cfg = grpo_config(tiny_random_model, data, tmp_path, "data.on_long_prompt=truncate")
    examples, prompts, metrics = load_prompts(cfg, tiny_tok, config)
    assert len(examples) == 3 and metrics["data/long_prompts_truncated"] == 1
    assert len(prompt_encoder(tiny_tok)(prompts[1])) == 240 and prompts[1].endswith("999. Assistant:")

    cfg = grpo_config(tiny_random_model, data, tmp_path, "data.on_long_prompt=error")
    with pytest.raises(ConfigError, match=r"1 of 3 prompts are longer than the 240 tokens .*\(longest 319\)"):
        load_prompts(cfg, tiny_tok, config)

    vllm = grpo_config(tiny_random_model, data, tmp_path, "rollout.engine=vllm", "rollout.vllm.max_model_len=64")
    _, prompts, metrics = load_prompts(vllm, tiny_tok, config)  # vLLM's max_model_len is the tighter limit
    assert len(prompts) == 2 and metrics["data/long_prompts_skipped"] == 1


def test_train_grpo_reports_skipped_prompts_in_its_metrics(tiny_random_model, tmp_path) -> None:
    data = write_rows(tmp_path / "rows.jsonl", [SHORT, LONG, "2+2=?", "3+4=?"])
    train_grpo(grpo_config(tiny_random_model, data, tmp_path / "run"))
    row = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]
    assert row["data/long_prompts_skipped"] == 1 and row["data/long_prompts_truncated"] == 0


# ---------------------------------------------------------------- SFT


def test_sft_long_rows_are_truncated_skipped_or_refused(tiny_random_model, tiny_tok, tmp_path) -> None:
    path = tmp_path / "sft.jsonl"
    rows = [{"prompt": "User: 1+1. Assistant:", "response": "2"}, {"prompt": "p", "response": "9" * 80}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = AutoConfig.from_pretrained(tiny_random_model)

    cut = load_sft_data(SFTDataConfig(path=str(path), max_length=40), tiny_tok, seed=0, model_config=config)
    assert (cut.report.truncated, cut.report.skipped, len(cut.train)) == (1, 0, 2)
    assert max(len(ex.input_ids) for ex in cut.train) == 40

    skip = load_sft_data(SFTDataConfig(path=str(path), max_length=40, on_long_row="skip"), tiny_tok, seed=0)
    assert (skip.report.truncated, skip.report.skipped, len(skip.train)) == (0, 1, 1)
    assert "1 skipped as longer than max_length (longest 83 tokens)" in skip.report.summary()

    with pytest.raises(ConfigError, match=r"1 of 2 examples are longer than data\.max_length=40 tokens \(longest 83\)"):
        load_sft_data(SFTDataConfig(path=str(path), max_length=40, on_long_row="error"), tiny_tok, seed=0)
    with pytest.raises(ConfigError, match=r"data\.max_length=512 is over the model's 256 positions"):
        load_sft_data(SFTDataConfig(path=str(path), max_length=512), tiny_tok, seed=0, model_config=config)


# ---------------------------------------------------------------- eval


def test_eval_counts_and_reports_long_prompts(tiny_random_model, tmp_path) -> None:
    model, tokenizer = load_model(str(tiny_random_model)), load_tokenizer(str(tiny_random_model))
    engine = TransformersEngine(model, tokenizer)
    examples = [Example(prompt=SHORT, answer="3", id="a"), Example(prompt=LONG, answer="9", id="b"),
                Example(prompt="2+2=?", answer="4", id="c")]
    settings = EvalSettings(k=0, greedy=True, max_new_tokens=8)
    result = evaluate(engine, tokenizer, examples, settings, template="r1_zero_short", progress=False)
    m = result.metrics
    assert (m.questions, m.long_prompts, m.long_prompts_action, m.prompt_budget) == (2, 1, "skipped", 248)
    assert {r.id for r in result.samples} == {"a", "c"}
    assert "│ prompts over the context │ 1 skipped (over 248 prompt tokens) │" in table_text(result)
    saved = json.loads((write_results(result, tmp_path) / "metrics.json").read_text())
    assert (saved["long_prompts"], saved["long_prompts_action"]) == (1, "skipped")

    cut = evaluate(engine, tokenizer, examples, settings, template="r1_zero_short", progress=False,
                   on_long_prompt="truncate")
    assert (cut.metrics.questions, cut.metrics.long_prompts_action) == (3, "truncated")
    assert len(engine.encode_prompt(cut.samples[1].prompt)) == 248

    fits = evaluate(engine, tokenizer, examples[:1], settings, template="r1_zero_short", progress=False)
    assert "0 (all fit 248 prompt tokens)" in table_text(fits)


def table_text(result) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(metrics_table(result))
    return console.export_text()


def test_sample_skips_prompts_past_the_context_and_reports_them(tiny_random_model, tmp_path):
    from thinkrl.pipeline.sample import SampleConfig, run_sample

    data = write_rows(tmp_path / "rows.jsonl", [SHORT, LONG, SHORT + "1", LONG + "1"])
    settings = {"model": {"name": str(tiny_random_model)}, "run": {"output_dir": str(tmp_path / "run")}, "n": 1,
                "max_new_tokens": 8, "rewards": [{"name": "long_prompt_test_digits"}], "min_reward": 0.0,
                "reward_workers": 0, "data": {"path": str(data)}, "decontam": {"enabled": False},
                "filters": {"require_format": False, "drop_truncated": False, "language": None}}
    result = run_sample(SampleConfig.model_validate(settings))
    assert result.report["prompts"] == 2 and result.report["long_prompts"] == {"skipped": 2, "truncated": 0}
    assert result.report["generated"] == 2
    settings["data"]["on_long_prompt"] = "error"
    settings["run"]["output_dir"] = str(tmp_path / "refused")
    with pytest.raises(ConfigError, match=r"2 of 4 prompts are longer than the 248 tokens"):
        run_sample(SampleConfig.model_validate(settings))
