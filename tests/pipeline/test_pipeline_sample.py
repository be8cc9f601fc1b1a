"""`thinkrl sample` end to end: a tiny random checkpoint, scripted answers, a real
OpenAI-compatible server over a checkpoint, a scripted judge server, and resuming."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import pytest
import yaml

import thinkrl.pipeline.sample as sample_module
from thinkrl.config import load_config
from thinkrl.data.example import Example
from thinkrl.errors import ConfigError, ThinkrlError
from thinkrl.pipeline.sample import SampleConfig, run_sample, shard_seed
from thinkrl.rewards import RewardResult, register
from thinkrl.rollout.base import Completion, SamplingParams


@register("test_sample_has_digit", isolate=False)
def has_digit(completion: str, example: Example) -> RewardResult:
    """An easy reward for a random model: the answer holds a digit."""
    return RewardResult(1.0, "digit") if re.search(r"\d", completion) else RewardResult(0.0, "no_digit")


class CountingEngine:
    """Wraps an engine and records every generate call (which prompts, which seed)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[tuple[list[str], SamplingParams]] = []

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        self.calls.append((list(prompts), params))
        return self.inner.generate(prompts, params)


class ScriptedEngine:
    """Answers each prompt with fixed (text, finish_reason) pairs, cycled to n."""

    def __init__(self, answers: dict[str, list[tuple[str, str]]]) -> None:
        self.answers = answers
        self.prompts_seen: list[str] = []

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        self.prompts_seen += prompts
        out = []
        for i, prompt in enumerate(prompts):
            script = self.answers[prompt]
            for k in range(params.n):
                text, reason = script[k % len(script)]
                out.append(Completion(prompt_index=i, text=text, finish_reason=reason))
        return out


def checkpoint_engine(folder: Path) -> CountingEngine:
    from thinkrl.models import load_model, load_tokenizer
    from thinkrl.rollout.transformers_engine import TransformersEngine

    return CountingEngine(TransformersEngine(load_model(str(folder)), load_tokenizer(str(folder))))


def random_model_config(model: Path, out: Path, **changes) -> SampleConfig:
    """Settings a random model can pass: a digit counts as correct; its gibberish never
    closes a think block or stops, so format and truncation filters are off."""
    data = {
        "model": {"name": str(model)}, "run": {"output_dir": str(out)}, "n": 3, "max_new_tokens": 12, "temperature": 1.0,
        "top_p": 1.0, "chunk_size": 2, "rewards": [{"name": "test_sample_has_digit"}], "reward_workers": 0,
        "data": {"limit": 6}, "decontam": {"enabled": False},
        "filters": {"require_format": False, "drop_truncated": False, "language": None},
    }
    for key, value in changes.items():
        node = data
        *parents, last = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return SampleConfig.model_validate(data)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# ---------------------------------------------------------------- config


def test_overriding_a_data_field_keeps_the_training_split():
    cfg = load_config(SampleConfig, None, ["data.limit=5"])
    assert cfg.data.task_seed == 0 and cfg.data.limit == 5 and cfg.data.path == "task:chain"


def test_chat_endpoint_with_chat_template_is_refused():
    with pytest.raises(ConfigError, match="endpoint.mode=chat"):
        load_config(SampleConfig, None, ["endpoint.mode=chat", "data.template=chat"])


def test_old_flat_field_names_say_where_they_went(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("model: some/checkpoint\noutput_dir: runs/x\n")
    with pytest.raises(ConfigError, match=r"^config field 'model' is now 'model.name' \(--set model.name=some/checkpoint\)$"):
        load_config(SampleConfig, old)
    for item, new in [("output_dir=runs/x", "run.output_dir"), ("torch_threads=2", "run.torch_threads"),
                      ("seed=3", "run.seed"), ("dtype=bfloat16", "model.dtype"), ("device=cpu", "model.device")]:
        with pytest.raises(ConfigError, match=f"'{item.split('=')[0]}' is now '{new}'"):
            load_config(SampleConfig, None, [item])
    cfg = load_config(SampleConfig, None, ["model.name=m", "run.seed=3", "run.torch_threads=2"])
    assert (cfg.model.name, cfg.run.seed, cfg.run.torch_threads, cfg.run.output_dir) == ("m", 3, 2, "runs/sample")


def test_a_run_folder_written_with_the_old_flat_names_still_resumes(tmp_path):
    from thinkrl.pipeline.sample_output import prepare_output_dir

    cfg = load_config(SampleConfig, None, ["model.name=m", "model.dtype=bfloat16", f"run.output_dir={tmp_path}",
                                           "run.seed=3"])
    old = cfg.model_dump(mode="json")
    model, run = old.pop("model"), old.pop("run")
    old.update(model=model["name"], dtype=model["dtype"], device=model["device"], **run)  # as 0.x wrote it
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    prepare_output_dir(tmp_path, cfg, overwrite=False)  # the same run: resumes
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**old, "seed": 4}))
    with pytest.raises(ConfigError, match=r"different config \(run.seed changed\)"):
        prepare_output_dir(tmp_path, cfg, overwrite=False)


def test_shard_seeds_depend_on_seed_and_shard_only():
    assert shard_seed(0, 1) == shard_seed(0, 1)
    assert len({shard_seed(0, 0), shard_seed(0, 1), shard_seed(1, 0)}) == 3


# ---------------------------------------------------------------- end to end on a random checkpoint


def test_run_sample_on_a_random_checkpoint_counts_add_up(tiny_random_model, tmp_path):
    cfg = random_model_config(tiny_random_model, tmp_path / "run", filters__max_per_prompt=2)
    engine = checkpoint_engine(tiny_random_model)
    result = run_sample(cfg, engine=engine)

    report = json.loads((tmp_path / "run" / "report.json").read_text())
    kept, dropped = read_jsonl(result.data_path), read_jsonl(result.dropped_path)
    assert report == result.report
    assert report["prompts"] == 6 and report["generated"] == 18 and report["shards"] == 3
    assert report["kept"] == len(kept) and sum(report["dropped"].values()) == len(dropped)
    assert len(kept) + len(dropped) == 18
    assert len(kept) > 0, "a random model should write a digit now and then"
    assert set(report["dropped"]) <= {"incorrect", "duplicate", "over_max_per_prompt", "empty"}
    assert report["prompts_with_a_kept_answer"] == len({row["id"] for row in kept})
    for row in kept:
        assert re.search(r"\d", row["response"]) and row["reward"] == 1.0
        assert row["prompt"] == f"User: {row['question']}. Assistant:"  # the exact text the model continued
        assert set(row) == {"prompt", "response", "question", "answer", "kind", "id", "reward"}
    assert max(sum(1 for row in kept if row["id"] == i) for i in {row["id"] for row in kept}) <= 2
    for row in dropped:
        if row["reason"] == "incorrect":
            assert not re.search(r"\d", row["response"]) and row["detail"] == {"test_sample_has_digit": "no_digit"}
    # The datasets copy holds the same rows.
    table = datasets.load_from_disk(str(result.dataset_path))
    assert table.num_rows == len(kept) and table["response"] == [row["response"] for row in kept]
    # Three shards of two prompts, each sampled with its own seed.
    assert [len(prompts) for prompts, _ in engine.calls] == [2, 2, 2]
    assert [params.seed for _, params in engine.calls] == [shard_seed(0, i) for i in range(3)]


def test_scripted_answers_are_sorted_into_kept_and_dropped_with_reasons(tmp_path):
    cfg = SampleConfig.model_validate({
        "run": {"output_dir": str(tmp_path / "run")}, "n": 8, "data": {"limit": 2}, "reward_workers": 0,
        "filters": {"max_paragraph_chars": 300},
    })
    from thinkrl.data.loaders import load_examples

    first, second = load_examples(cfg.data)
    good = f"<think>let me work it out step by step</think><answer>{first.answer}</answer>"
    answers = {
        f"User: {first.prompt}. Assistant:": [
            (good, "stop"),
            (good.upper().replace("<THINK>", "<think>").replace("</THINK>", "</think>")
             .replace("<ANSWER>", "<answer>").replace("</ANSWER>", "</answer>"), "stop"),  # a duplicate
            ("<think>I am not sure</think><answer>100000</answer>", "stop"),  # wrong
            (f"<answer>{first.answer}</answer>", "stop"),  # no think block
            (f"<think>code: ```print(1)```</think><answer>{first.answer}</answer>", "stop"),
            (f"<think>we work it out here. 我们一步一步地计算这个表达式的值。</think><answer>{first.answer}</answer>", "stop"),
            (f"<think>{'keep going with the sum ' * 20}</think><answer>{first.answer}</answer>", "stop"),
            (f"<think>still thinking about {first.answer}", "length"),
        ],
        f"User: {second.prompt}. Assistant:": [(f"<think>ok</think><answer>{second.answer}</answer>", "stop"),
                                               (f"<think>again</think> <answer>{second.answer}</answer>", "stop")],
    }
    result = run_sample(cfg, engine=ScriptedEngine(answers))
    kept, dropped = read_jsonl(result.data_path), read_jsonl(result.dropped_path)
    assert [(row["id"], row["response"]) for row in kept] == [
        (first.id, good),
        (second.id, answers[f"User: {second.prompt}. Assistant:"][0][0]),
        (second.id, answers[f"User: {second.prompt}. Assistant:"][1][0]),
    ]
    assert [row["reason"] for row in dropped if row["id"] == first.id] == [
        "duplicate", "incorrect", "format_missing_think", "code_block", "mixed_language", "long_paragraph", "truncated"]
    # The second prompt's two answers repeat four times each: the repeats are duplicates.
    assert [row["reason"] for row in dropped if row["id"] == second.id] == ["duplicate"] * 6
    assert result.report["dropped"] == {"duplicate": 7, "incorrect": 1, "format_missing_think": 1, "code_block": 1,
                                        "mixed_language": 1, "long_paragraph": 1, "truncated": 1}
    wrong = next(row for row in dropped if row["reason"] == "incorrect")
    assert wrong["reward"] == 0.0 and wrong["detail"] == {"accuracy": "wrong"}


def test_prompts_overlapping_an_eval_set_are_never_sampled(tmp_path, data_dir):
    math500 = read_jsonl(data_dir / "math500" / "test.jsonl")
    rows = [{"problem": math500[10]["problem"], "answer": math500[10]["answer"]},
            {"problem": "Compute the sum of the first ten positive odd integers, then divide it by four.", "answer": "25"},
            {"problem": "  " + math500[20]["problem"].lower(), "answer": math500[20]["answer"]}]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = SampleConfig.model_validate({
        "run": {"output_dir": str(tmp_path / "run")}, "n": 1, "reward_workers": 0,
        "data": {"path": str(data), "kind": "math"},
        "decontam": {"sources": [str(data_dir / "math500" / "test.jsonl")]},
    })
    prompt = f"User: {rows[1]['problem']}. Assistant:"
    engine = ScriptedEngine({prompt: [("<think>1+3+...+19 = 100, and 100/4 = 25</think> \\boxed{25}", "stop")]})
    result = run_sample(cfg, engine=engine)
    assert engine.prompts_seen == [prompt]
    assert result.report["contaminated_prompts"] == 2 and result.report["kept"] == 1
    contaminated = read_jsonl(tmp_path / "run" / "contaminated.jsonl")
    assert [row["question"] for row in contaminated] == [rows[0]["problem"], rows[2]["problem"]]


# ---------------------------------------------------------------- resume


def test_an_interrupted_run_resumes_without_resampling_and_matches_an_unbroken_one(tiny_random_model, tmp_path,
                                                                                  monkeypatch):
    unbroken = run_sample(random_model_config(tiny_random_model, tmp_path / "unbroken"),
                          engine=checkpoint_engine(tiny_random_model))

    real_write = sample_module.write_shard

    def write_then_crash(shard_dir, result):
        real_write(shard_dir, result)
        if result.index == 1:
            raise KeyboardInterrupt("killed after shard 1")

    monkeypatch.setattr(sample_module, "write_shard", write_then_crash)
    cfg = random_model_config(tiny_random_model, tmp_path / "resumed")
    first = checkpoint_engine(tiny_random_model)
    with pytest.raises(KeyboardInterrupt):
        run_sample(cfg, engine=first)
    assert len(first.calls) == 2
    assert sorted(p.name for p in (tmp_path / "resumed" / "shards").iterdir()) == ["shard-00000.json", "shard-00001.json"]
    assert not (tmp_path / "resumed" / "data.jsonl").exists()

    monkeypatch.setattr(sample_module, "write_shard", real_write)
    second = checkpoint_engine(tiny_random_model)
    resumed = run_sample(cfg, engine=second)
    assert len(second.calls) == 1  # only shard 2: shards 0 and 1 were not resampled
    assert second.calls[0][1].seed == shard_seed(0, 2)
    assert read_jsonl(resumed.data_path) == read_jsonl(unbroken.data_path)
    assert read_jsonl(resumed.dropped_path) == read_jsonl(unbroken.dropped_path)
    assert resumed.report == unbroken.report

    # A finished run reruns without sampling at all.
    third = checkpoint_engine(tiny_random_model)
    assert run_sample(cfg, engine=third).report == unbroken.report and third.calls == []


def test_a_different_config_refuses_unless_overwrite(tiny_random_model, tmp_path):
    out = tmp_path / "run"
    run_sample(random_model_config(tiny_random_model, out, data__limit=2), engine=checkpoint_engine(tiny_random_model))
    changed = random_model_config(tiny_random_model, out, data__limit=2, n=2)
    with pytest.raises(ConfigError, match=r"different config \(n changed\).*overwrite=true"):
        run_sample(changed, engine=checkpoint_engine(tiny_random_model))
    again = checkpoint_engine(tiny_random_model)
    result = run_sample(changed.model_copy(update={"overwrite": True}), engine=again)
    assert len(again.calls) == 1 and result.report["generated"] == 4
    # run.torch_threads does not change the samples, so it may change on a rerun.
    threads = changed.run.model_copy(update={"torch_threads": 1})
    run_sample(changed.model_copy(update={"run": threads}), engine=checkpoint_engine(tiny_random_model))


# ---------------------------------------------------------------- endpoint and judge servers


def test_sampling_through_a_served_checkpoint_matches_sampling_it_locally(tiny_random_model, tmp_path):
    from thinkrl.rollout.server import serve_in_background

    local = run_sample(random_model_config(tiny_random_model, tmp_path / "local", chunk_size=1, data__limit=3),
                       engine=checkpoint_engine(tiny_random_model))
    with serve_in_background(str(tiny_random_model)) as base_url:
        cfg = random_model_config(tiny_random_model, tmp_path / "remote", chunk_size=1, data__limit=3,
                                  endpoint={"base_url": base_url, "model": str(tiny_random_model)})
        remote = run_sample(cfg)
    assert remote.report["source"] == base_url and remote.report["generated"] == 9
    # One prompt per shard and per request, same seed: the server samples what we would.
    assert read_jsonl(remote.data_path) == read_jsonl(local.data_path)
    assert read_jsonl(remote.dropped_path) == read_jsonl(local.dropped_path)


def scripted_judge_app(calls: list[str]):
    """An OpenAI-compatible chat endpoint that says CORRECT when the prediction contains the
    reference (case ignored), and fails with 500 on a prediction saying 'crash'."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.post("/v1/chat/completions")
    def chat(body: dict):
        prompt = body["messages"][-1]["content"]
        reference = re.search(r"<reference-[0-9a-f]+>\n(.*)\n</reference-[0-9a-f]+>", prompt, re.DOTALL).group(1).strip().lower()
        prediction = re.search(r"<prediction-[0-9a-f]+>\n(.*)\n</prediction-[0-9a-f]+>", prompt, re.DOTALL).group(1).strip().lower()
        calls.append(prediction)
        if "crash" in prediction:
            return JSONResponse({"error": {"message": "judge crashed"}}, status_code=500)
        verdict = "CORRECT" if reference and reference in prediction else "INCORRECT"
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"Compared.\nVERDICT: {verdict}"}}]}

    return app


def general_setup(tmp_path: Path, answers: list[str]):
    data = write_jsonl(tmp_path / "general.jsonl", [
        {"prompt": "What is the capital of France", "answer": "Paris", "kind": "general", "id": "g0"}])
    engine = ScriptedEngine({"User: What is the capital of France. Assistant:": [(a, "stop") for a in answers]})
    return data, engine


def test_prompts_rules_cannot_grade_go_to_the_judge(tmp_path):
    from thinkrl.rollout.server import serve_app

    answers = ["<think>France's capital city is well known.</think> It is Paris.",
               "<think>I think it is the largest city on the Rhone.</think> Lyon",
               "<think>I cannot decide"]
    data, engine = general_setup(tmp_path, answers)
    calls: list[str] = []
    with serve_app(scripted_judge_app(calls)) as root:
        cfg = SampleConfig.model_validate({
            "run": {"output_dir": str(tmp_path / "run")}, "n": 3, "data": {"path": str(data), "preset": "none"},
            "filters": {"require_format": False},
            "judge": {"base_url": f"{root}/v1", "model": "scripted-judge", "cache_dir": str(tmp_path / "cache"),
                      "max_retries": 0},
        })
        result = run_sample(cfg, engine=engine)
    kept, dropped = read_jsonl(result.data_path), read_jsonl(result.dropped_path)
    assert [row["response"] for row in kept] == [answers[0]] and kept[0]["reward"] == 1.0
    assert [(row["reason"], row["detail"]) for row in dropped] == [
        ("incorrect", {"judge": "wrong"}), ("incorrect", {"judge": "no_answer"})]
    assert sorted(calls) == ["it is paris.", "lyon"]  # final answers only; the unclosed think is not sent
    assert result.report["judged"] == 2


def test_a_failing_judge_leaves_the_shard_to_be_redone(tmp_path):
    from thinkrl.rollout.server import serve_app

    data, engine = general_setup(tmp_path, ["<think>hmm</think> crash"])
    with serve_app(scripted_judge_app([])) as root:
        cfg = SampleConfig.model_validate({
            "run": {"output_dir": str(tmp_path / "run")}, "n": 1, "data": {"path": str(data), "preset": "none"},
            "judge": {"base_url": f"{root}/v1", "model": "j", "cache_dir": str(tmp_path / "cache"), "max_retries": 0},
        })
        with pytest.raises(ThinkrlError, match="judge .* failed on 1 of 1"):
            run_sample(cfg, engine=engine)
    assert not any((tmp_path / "run" / "shards").iterdir())


def test_prompts_nothing_can_grade_fail_before_sampling(tmp_path):
    data, engine = general_setup(tmp_path, ["<think>x</think> Paris"])
    cfg = SampleConfig.model_validate({"run": {"output_dir": str(tmp_path / "run")},
                                       "data": {"path": str(data), "preset": "none"}})
    with pytest.raises(ConfigError, match="rules cannot grade them; set judge"):
        run_sample(cfg, engine=engine)
    assert engine.prompts_seen == []


def test_an_unknown_reward_fails_before_sampling(tmp_path):
    cfg = SampleConfig.model_validate({"run": {"output_dir": str(tmp_path / "run")}, "data": {"limit": 2},
                                       "rewards": [{"name": "acuracy"}]})
    engine = ScriptedEngine({})
    with pytest.raises(ConfigError, match="did you mean 'accuracy'"):
        run_sample(cfg, engine=engine)
    assert engine.prompts_seen == []


# ---------------------------------------------------------------- the real default


@pytest.mark.slow
def test_the_tiny_default_yields_correct_readable_chain_answers(tmp_path):
    cfg = load_config(SampleConfig, None, [f"run.output_dir={tmp_path / 'run'}", "data.limit=48", "chunk_size=16",
                                           "reward_workers=0"])
    result = run_sample(cfg)
    kept = read_jsonl(result.data_path)
    from thinkrl.data.config import DataConfig
    from thinkrl.data.loaders import load_examples

    truth = {ex.id: ex.answer for ex in load_examples(DataConfig(task_seed=0, limit=48))}
    assert result.report["generated"] == 48 * 4
    assert result.report["prompts_with_a_kept_answer"] >= 24  # the tiny model solves most chain problems
    for row in kept:
        assert row["answer"] == truth[row["id"]]
        assert row["response"].startswith("<think>") and f"<answer>{row['answer']}</answer>" in row["response"]
