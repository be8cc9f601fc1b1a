"""`thinkrl sample`: R1 stage 3 rejection sampling (and distillation's data step).

Sample `n` answers per prompt from a checkpoint or an OpenAI-compatible endpoint (a
teacher), drop unreadable ones (filters.py), grade the rest with rule rewards or, where
rules cannot check, an LLM judge, and keep the correct ones as an SFT dataset:
`data.jsonl` rows of {prompt, response, ...} that `thinkrl sft` reads verbatim.

Prompts overlapping an evaluation set are dropped before sampling (decontam.py). Work is
done in shards of `chunk_size` prompts, each written atomically once finished, with its
sampling seed derived from (seed, shard): an interrupted run continues where it stopped
and ends with exactly the data an unbroken run would have produced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from thinkrl.data.config import TrainDataConfig
from thinkrl.data.example import Example
from thinkrl.errors import ConfigError, ThinkrlError
from thinkrl.pipeline.decontam import DecontamConfig, build_index
from thinkrl.pipeline.filters import FilterConfig, duplicates, first_problem
from thinkrl.pipeline.sample_output import (
    SHARDS_DIR,
    SampleResult,
    ShardResult,
    build_report,
    prepare_output_dir,
    print_summary,
    read_shard,
    write_outputs,
    write_shard,
)
from thinkrl.rewards.judge import JudgeConfig
from thinkrl.rewards.spec import RewardTerm
from thinkrl.rollout.base import Completion, RolloutEngine, SamplingParams, derived_seed
from thinkrl.rollout.engines import EndpointConfig, EngineConfig, make_engine
from thinkrl.sections import InferenceModelConfig, OutputRunConfig, resolve_device, set_torch_threads


class SampleDataConfig(TrainDataConfig):
    """Prompts to sample answers for: a training split by default (decontamination keeps the
    held-out split out)."""

    task_size: int = Field(256, ge=1, description="number of problems drawn from a task: source")


class SampleModelConfig(InferenceModelConfig):
    name: str = Field("thinkrl/tiny", description="checkpoint to sample from when endpoint is null (local folder, "
                      "hub id in the local cache, thinkrl/tiny); also the tokenizer for data.template=chat")
    device: str = Field("auto", description="torch device for checkpoint sampling (auto: cuda if available)")


class SampleRunConfig(OutputRunConfig):
    output_dir: str = Field("runs/sample", description="folder for data.jsonl, dataset/, dropped.jsonl, report.json")
    seed: int = Field(0, description="sampling seed; each shard's seed derives from it and the shard number")


class SampleConfig(EngineConfig):
    """Rejection sampling into an SFT dataset: what to sample from, how, and what to keep."""

    renamed: ClassVar[dict[str, str]] = {
        "model": "model.name", "dtype": "model.dtype", "device": "model.device",
        "output_dir": "run.output_dir", "torch_threads": "run.torch_threads", "seed": "run.seed"}

    model: SampleModelConfig = SampleModelConfig()
    endpoint: EndpointConfig | None = Field(None, description="sample from this OpenAI-compatible server instead "
                                            "of model.name")
    data: SampleDataConfig = Field(SampleDataConfig(), description="prompts to sample answers for "
                                   "(default: the chain task's training split)")
    n: int = Field(4, ge=1, description="answers sampled per prompt")
    temperature: float = Field(0.6, ge=0, description="sampling temperature (0: greedy)")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling")
    max_new_tokens: int = Field(128, ge=1, description="answer length cap in tokens")
    stop: list[str] = Field([], description="stop strings: an answer ends after the first one (kept in the text)")
    rewards: list[RewardTerm] = Field([RewardTerm(name="accuracy")], description="rule rewards that decide correctness")
    min_reward: float = Field(1.0, description="keep an answer whose total rule reward is at least this")
    reward_workers: int = Field(2, ge=0, description="worker processes for rewards that parse untrusted output")
    judge: JudgeConfig | None = Field(None, description="LLM judge for prompts rules cannot grade (kind general "
                                      "or no reference answer); null: such prompts are an error")
    filters: FilterConfig = Field(FilterConfig(), description="readability filters")
    decontam: DecontamConfig = Field(DecontamConfig(), description="evaluation sets to keep out of the data")
    chunk_size: int = Field(64, ge=1, description="prompts per shard (the unit of resuming)")
    batch_size: int = Field(64, ge=1, description="sequences per generate call (transformers engine)")
    run: SampleRunConfig = SampleRunConfig()
    overwrite: bool = Field(False, description="start over when run.output_dir holds a run with a different config")

    @model_validator(mode="after")
    def _chat_endpoint_renders_itself(self) -> SampleConfig:
        if self.endpoint is not None and self.endpoint.mode == "chat" and self.data.template == "chat":
            raise ValueError("endpoint.mode=chat applies the chat template on the server; set data.template to "
                             "plain (or r1_zero) instead of chat")
        return self


# ---------------------------------------------------------------- the driver


def run_sample(cfg: SampleConfig, engine: RolloutEngine | None = None) -> SampleResult:
    """Sample, filter, grade and keep: writes the SFT dataset under cfg.run.output_dir (resumable).

    `engine` replaces the one cfg names (e.g. a policy already in memory)."""
    set_torch_threads(cfg.run.torch_threads)
    out = Path(cfg.run.output_dir)
    prepare_output_dir(out, cfg, cfg.overwrite)
    examples, contaminated = _load_clean_examples(cfg)
    _check_gradable(examples, cfg)
    prompts = _render_prompts(examples, cfg)
    examples, prompts, long_prompts = _fit_context(examples, prompts, cfg, engine)
    examples = [_with_prefill_flag(ex, p) for ex, p in zip(examples, prompts)]
    starts = list(range(0, len(examples), cfg.chunk_size))
    shard_dir = out / SHARDS_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    results: list[ShardResult] = []
    judge = None
    with _progress() as progress:
        task = progress.add_task("sampling", total=len(starts))
        for index, start in enumerate(starts):
            part = slice(start, start + cfg.chunk_size)
            prompt_hash = _hash_prompts(prompts[part], examples[part])
            result = read_shard(shard_dir, index, prompt_hash)
            if result is None:
                engine = engine or build_engine(cfg)
                if judge is None and cfg.judge is not None and any(needs_judge(ex) for ex in examples[part]):
                    judge = _build_judge(cfg.judge)
                result = sample_shard(engine, judge, prompts[part], examples[part], cfg, index, prompt_hash)
                write_shard(shard_dir, result)
            results.append(result)
            progress.update(task, advance=1)
    source = cfg.endpoint.base_url if cfg.endpoint is not None else cfg.model.name
    report = build_report(results, len(examples), len(contaminated), source)
    report["long_prompts"] = {"skipped": long_prompts.skipped, "truncated": long_prompts.truncated}
    result = write_outputs(out, results, contaminated, report)
    print_summary(report, cfg.n, cfg.run.output_dir)
    return result


def sample_shard(engine: RolloutEngine, judge: Any, prompts: list[str], examples: list[Example],
                 cfg: SampleConfig, index: int, prompt_hash: str) -> ShardResult:
    """Sample one shard's prompts and sort every answer into kept or dropped (with why)."""
    params = SamplingParams(n=cfg.n, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            top_p=cfg.top_p, seed=shard_seed(cfg.run.seed, index), stop=tuple(cfg.stop))
    completions = engine.generate(prompts, params)
    if len(completions) != len(prompts) * cfg.n:
        raise ThinkrlError(f"the engine returned {len(completions)} answers for {len(prompts)} prompts x n={cfg.n}")
    reasons: list[str | None] = [_readability(c, examples[c.prompt_index], cfg.filters) for c in completions]
    if cfg.filters.dedup:
        _mark_duplicates(completions, reasons)
    rewards, details = grade(completions, reasons, examples, cfg, judge)
    kept_per_prompt: Counter = Counter()
    kept, dropped = [], []
    for i, c in enumerate(completions):
        ex = examples[c.prompt_index]
        reason = reasons[i]
        if reason is None and kept_per_prompt[c.prompt_index] >= (cfg.filters.max_per_prompt or cfg.n):
            reason = "over_max_per_prompt"
        if reason is None:
            kept_per_prompt[c.prompt_index] += 1
            kept.append({"prompt": prompts[c.prompt_index], "response": c.text, "question": ex.prompt,
                         "answer": ex.answer, "kind": ex.kind, "id": ex.id, "reward": rewards[i]})
        else:
            dropped.append({"id": ex.id, "question": ex.prompt, "response": c.text, "reason": reason,
                            "reward": rewards[i], "detail": details[i]})
    judged = sum(1 for d in details if isinstance(d, dict) and d.get("judge") not in (None, "no_answer"))
    return ShardResult(index, prompt_hash, len(completions), judged, kept, dropped)


def _readability(completion: Completion, example: Example, filters: FilterConfig) -> str | None:
    if filters.drop_truncated and completion.truncated:
        return "truncated"
    return first_problem(completion.text, example, filters)


def _mark_duplicates(completions: list[Completion], reasons: list[str | None]) -> None:
    """Per prompt, an answer equal to an earlier surviving one becomes a `duplicate`."""
    by_prompt: dict[int, list[int]] = {}
    for i, c in enumerate(completions):
        if reasons[i] is None:
            by_prompt.setdefault(c.prompt_index, []).append(i)
    for members in by_prompt.values():
        for i, dup in zip(members, duplicates([completions[i].text for i in members])):
            if dup:
                reasons[i] = "duplicate"


def grade(completions: list[Completion], reasons: list[str | None], examples: list[Example], cfg: SampleConfig,
          judge: Any) -> tuple[list[float | None], list[Any]]:
    """Grade the answers still standing: rule rewards where rules can check, the judge elsewhere.
    Fills `reasons[i] = "incorrect"` for failures; returns (reward, detail) per answer."""
    from thinkrl.rewards.scoring import score_completions
    from thinkrl.train.rollouts import sampled_ids

    rewards: list[float | None] = [None] * len(completions)
    details: list[Any] = [None] * len(completions)
    live = [i for i in range(len(completions)) if reasons[i] is None]
    by_rules = [i for i in live if not needs_judge(examples[completions[i].prompt_index])]
    by_judge = [i for i in live if needs_judge(examples[completions[i].prompt_index])]
    if by_rules:
        scores = score_completions([completions[i].text for i in by_rules],
                                   [examples[completions[i].prompt_index] for i in by_rules],
                                   cfg.rewards, workers=cfg.reward_workers,
                                   completion_ids=[sampled_ids(completions[i]) for i in by_rules])
        for j, i in enumerate(by_rules):
            rewards[i] = scores.total[j]
            details[i] = {name: why[j] for name, why in scores.reasons.items()}
            if scores.total[j] < cfg.min_reward:
                reasons[i] = "incorrect"
    if by_judge:
        _judge_answers(judge, [completions[i] for i in by_judge], examples, by_judge, rewards, details, reasons)
    return rewards, details


def _judge_answers(judge: Any, completions: list[Completion], examples: list[Example], where: list[int],
                   rewards: list[float | None], details: list[Any], reasons: list[str | None]) -> None:
    """The LLM judge's verdicts for answers rules cannot grade, written into the shard's lists."""
    from thinkrl.rewards.judge import JudgeItem, judged_answer

    asked, items = [], []
    for i, c in zip(where, completions):
        ex = examples[c.prompt_index]
        prediction = judged_answer(c.text)
        if prediction is None:  # no final answer (thinking never closed): nothing to judge
            rewards[i], details[i], reasons[i] = 0.0, {"judge": "no_answer"}, "incorrect"
            continue
        asked.append(i)
        items.append(JudgeItem(question=ex.prompt, reference="" if ex.answer is None else str(ex.answer),
                               prediction=prediction))
    verdicts = judge.grade_many(items) if items else []
    failed = sum(1 for v in verdicts if v.reason == "error")
    if failed:  # leave the shard unwritten, so a rerun asks again instead of keeping "incorrect"
        raise ThinkrlError(f"the judge at {judge.cfg.base_url} failed on {failed} of {len(verdicts)} answers; "
                           f"rerun to retry (finished shards are kept)")
    for i, verdict in zip(asked, verdicts):
        rewards[i], details[i] = (1.0 if verdict.correct else 0.0), {"judge": verdict.reason}
        if not verdict.correct:
            reasons[i] = "incorrect"


def needs_judge(example: Example) -> bool:
    """Rules cannot grade a general prompt, nor one with neither a reference answer nor tests."""
    return example.kind == "general" or (example.answer is None and not example.tests)


shard_seed = derived_seed  # a shard's sampling seed depends only on (seed, shard), never on run history


# ---------------------------------------------------------------- inputs


def build_engine(cfg: SampleConfig) -> RolloutEngine:
    """The engine cfg names: the endpoint if set, else transformers or vLLM over the checkpoint."""
    return make_engine(cfg, cfg.model.name, endpoint=cfg.endpoint, seed=cfg.run.seed, dtype=cfg.model.dtype,
                       device=resolve_device(cfg.model.device) if cfg.engine == "transformers" else None)


def _build_judge(judge_cfg: JudgeConfig) -> Any:
    from thinkrl.rewards.judge import get_judge

    return get_judge(judge_cfg)  # one client and cache connection per judge config, reused by later stages


def _load_clean_examples(cfg: SampleConfig) -> tuple[list[Example], list[Example]]:
    """(examples to sample, examples dropped because they overlap an evaluation set)."""
    from thinkrl.data.loaders import load_examples

    examples = load_examples(cfg.data)
    index = build_index(cfg.decontam)
    if index is None:
        return examples, []
    flags = [index.contaminated(ex.prompt) for ex in examples]
    return [ex for ex, bad in zip(examples, flags) if not bad], [ex for ex, bad in zip(examples, flags) if bad]


def _check_gradable(examples: list[Example], cfg: SampleConfig) -> None:
    """Fail before sampling, not after: bad reward names, or prompts nothing can grade."""
    from thinkrl.rewards.base import get_entry
    from thinkrl.rewards.scoring import check_options

    if not cfg.rewards:
        raise ConfigError("rewards is empty: name at least one reward that decides correctness")
    for term in cfg.rewards:
        check_options(get_entry(term.name), term.options)
    ungradable = [ex for ex in examples if needs_judge(ex)]
    if ungradable and cfg.judge is None:
        raise ConfigError(f"{len(ungradable)} prompts (e.g. '{ungradable[0].id}') are kind general or have no "
                          f"reference answer, so rules cannot grade them; set judge.base_url and judge.model")


def _render_prompts(examples: list[Example], cfg: SampleConfig) -> list[str]:
    from thinkrl.data.templates import render_prompt

    tokenizer = None
    if cfg.data.template == "chat":
        from thinkrl.models import load_tokenizer

        tokenizer = load_tokenizer(cfg.model.name)
    return [render_prompt(ex, cfg.data.template, tokenizer, cfg.data.system_prompt) for ex in examples]


def _fit_context(examples: list[Example], prompts: list[str], cfg: SampleConfig, engine: RolloutEngine | None):
    """Prompts that leave max_new_tokens of a local model's positions, as data.on_long_prompt says
    (skip by default, counted). A remote endpoint checks its own limit (thinkrl serve and vLLM
    answer 400), so its prompts pass as they are."""
    from thinkrl.data.context import LongPrompts, context_limit, fit_prompts, model_positions, prompt_decoder, prompt_encoder
    from thinkrl.data.loaders import announce

    if cfg.endpoint is not None and engine is None:
        return examples, prompts, LongPrompts(cfg.data.path, len(prompts))
    if engine is not None:
        from thinkrl.eval.evaluate import engine_positions

        tokenizer = getattr(engine, "tokenizer", None)
        positions = engine_positions(engine, tokenizer) if tokenizer is not None else None
    else:
        from transformers import AutoConfig

        from thinkrl.models import load_tokenizer, resolve_model_path

        tokenizer = load_tokenizer(cfg.model.name)
        positions = model_positions(AutoConfig.from_pretrained(resolve_model_path(cfg.model.name)), tokenizer)
    limit = context_limit(positions, cfg.max_new_tokens, "max_new_tokens")
    if limit is None:
        return examples, prompts, LongPrompts(cfg.data.path, len(prompts))
    encode = getattr(engine, "encode_prompt", None) or prompt_encoder(tokenizer)  # as the engine will encode them
    fitted = fit_prompts(prompts, encode, prompt_decoder(tokenizer), limit, cfg.data.on_long_prompt, cfg.data.path)
    if fitted.report.over:
        announce(f"data: {fitted.report.summary()}")
    return [examples[i] for i in fitted.kept], fitted.prompts, fitted.report


def _with_prefill_flag(example: Example, prompt: str) -> Example:
    """Filters and rewards must know when the prompt already opened `<think>`."""
    from thinkrl.data.templates import prompt_prefills_think

    return dataclasses.replace(example, meta={**example.meta, "prompt_prefills_think": prompt_prefills_think(prompt)})


def _hash_prompts(prompts: list[str], examples: list[Example]) -> str:
    digest = hashlib.sha256()
    for prompt, ex in zip(prompts, examples):
        digest.update(json.dumps([prompt, ex.id, ex.answer]).encode())
    return digest.hexdigest()[:16]


def _progress() -> Progress:
    return Progress(TextColumn("[bold]sample shards"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
