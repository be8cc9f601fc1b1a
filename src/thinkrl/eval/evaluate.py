"""Evaluate a policy on a prompt set: sample, grade with the reward registry, aggregate.

`evaluate` takes any rollout engine, so the GRPO trainer can call it on the model it is
training (before and after), and `thinkrl eval` calls it on a checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from thinkrl.algos.passk import cons_at_k, mean_pass_at_k, pass_at_1
from thinkrl.data.context import (
    LongPromptPolicy,
    context_limit,
    fit_prompts,
    model_positions,
    prompt_decoder,
    prompt_encoder,
)
from thinkrl.data.example import Example
from thinkrl.data.loaders import announce
from thinkrl.data.templates import prompt_prefills_think, render_prompt
from thinkrl.eval.config import EvalSettings
from thinkrl.eval.metrics import mean, reflection_counts, uses_scratchpad
from thinkrl.rewards import get_reward
from thinkrl.rewards.extract import extract_answer
from thinkrl.rollout.base import Completion, RolloutEngine, SamplingParams

# A reward at least this high counts as "correct" / "format ok" (rewards are 0..1; code
# rewards may give partial credit, which is not a solved problem).
FULL_SCORE = 1.0 - 1e-6


@dataclass
class SampleRecord:
    """One graded response: a row of samples.jsonl."""

    question: int
    id: str
    mode: str  # "greedy" or "sample"
    sample: int  # 0..k-1 within the question (0 for greedy)
    prompt: str
    completion: str
    answer: str | None  # the final answer extracted from the completion
    reference: str | None
    correct: bool
    format_ok: bool
    language: float  # share of the chain-of-thought words in the expected language
    tokens: int
    finish_reason: str
    reason: str  # why the answer reward said what it said


@dataclass
class EvalMetrics:
    """The numbers of one evaluation. Behaviour metrics (format, length, scratchpad,
    reflection) are taken over the k samples, or over the greedy answers when k = 0."""

    questions: int
    k: int
    greedy_accuracy: float | None
    pass_at_1: float | None  # mean correctness over the k samples, then over questions
    pass_at_k: float | None  # P(some sample of k is correct)
    cons_at_k: float | None  # majority vote over the extracted answers
    format_rate: float
    language_consistency: float  # mean share of chain-of-thought words in the expected language
    mean_response_tokens: float
    truncated_rate: float
    scratchpad_rate: float
    reflection_rate: float  # share of responses with at least one reflection word
    reflection_words: dict[str, int] = field(default_factory=dict)  # totals over those responses
    long_prompts: int = 0  # prompts over the model's context (prompt + max_new_tokens > its positions)
    long_prompts_action: str = "none"  # what happened to them: skipped (not in `questions`) or truncated
    prompt_budget: int | None = None  # prompt tokens the model's positions leave after max_new_tokens

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class EvalResult:
    metrics: EvalMetrics
    samples: list[SampleRecord]


def evaluate(engine: RolloutEngine, tokenizer: Any, examples: list[Example], settings: EvalSettings,
             template: str = "r1_zero", system_prompt: str | None = None, progress: bool = True,
             on_long_prompt: LongPromptPolicy = "skip", max_positions: int | None = None) -> EvalResult:
    """Greedy accuracy and pass@1 / cons@k over `settings.k` samples for every example.

    A prompt that leaves fewer than eval.max_new_tokens of the model's positions (given, or
    read from the engine's model) is skipped, left-truncated or an error as `on_long_prompt`
    says; the metrics count such prompts and say what happened to them."""
    if not examples:
        raise ValueError("evaluate needs at least one example")
    prompts = [render_prompt(ex, template, tokenizer, system_prompt) + settings.prefill for ex in examples]
    positions = max_positions if max_positions is not None else engine_positions(engine, tokenizer)
    limit = context_limit(positions, settings.max_new_tokens, "eval.max_new_tokens")
    encode = (getattr(engine, "encode_prompt", None) or prompt_encoder(tokenizer)) if limit else None
    fitted = fit_prompts(prompts, encode, prompt_decoder(tokenizer), limit, on_long_prompt, "eval prompts")
    if fitted.report.over:
        announce(f"data: {fitted.report.summary()}")
    examples, prompts = [examples[i] for i in fitted.kept], fitted.prompts
    # The rewards read this flag to know the prompt already opened the <think> block.
    graded = [dataclasses.replace(ex, meta={**ex.meta, "prompt_prefills_think": prompt_prefills_think(p)})
              for ex, p in zip(examples, prompts)]
    runs = []
    if settings.greedy:
        runs.append(("greedy", SamplingParams(n=1, temperature=0.0, max_new_tokens=settings.max_new_tokens,
                                              stop=tuple(settings.stop))))
    if settings.k:
        runs.append(("sample", SamplingParams(n=settings.k, temperature=settings.temperature, top_p=settings.top_p,
                                              max_new_tokens=settings.max_new_tokens, seed=settings.seed,
                                              stop=tuple(settings.stop))))
    per_call = [max(1, settings.batch_size // params.n) for _, params in runs]
    total = sum(-(-len(prompts) // size) for size in per_call)
    answer_reward, format_reward = get_reward(settings.answer_reward), get_reward(settings.format_reward)
    language_reward = get_reward(settings.language_reward)

    records: list[SampleRecord] = []
    with _progress_bar(progress) as bar:
        task = bar.add_task("eval", total=total)
        for (mode, params), size in zip(runs, per_call):
            for call, start in enumerate(range(0, len(prompts), size)):
                # A fresh seed per call: reusing one would give every chunk the same random draws.
                chunk_params = dataclasses.replace(params, seed=None if params.seed is None else params.seed + call)
                completions = engine.generate(prompts[start:start + size], chunk_params)
                records.extend(_grade(mode, start, completions, prompts, graded,
                                      (answer_reward, format_reward, language_reward), params.n))
                bar.update(task, advance=1, description=f"eval ({mode})")
    metrics = dataclasses.replace(summarize(records, len(examples), settings.k), long_prompts=fitted.report.over,
                                  long_prompts_action=fitted.report.action,
                                  prompt_budget=limit.prompt_budget if limit else None)
    return EvalResult(metrics=metrics, samples=records)


def engine_positions(engine: RolloutEngine, tokenizer: Any) -> int | None:
    """The positions of the model an in-process engine samples from (None for a remote one)."""
    config = getattr(getattr(engine, "model", None), "config", None)
    return model_positions(config, tokenizer) if config is not None else None


def _grade(mode: str, offset: int, completions: list[Completion], prompts: list[str], examples: list[Example],
           rewards: tuple[Any, Any, Any], n: int) -> list[SampleRecord]:
    answer_reward, format_reward, language_reward = rewards
    out = []
    for position, completion in enumerate(completions):
        q = offset + completion.prompt_index
        example = examples[q]
        verdict = answer_reward(completion.text, example)
        out.append(SampleRecord(
            question=q, id=example.id, mode=mode, sample=position % n, prompt=prompts[q],
            completion=completion.text, answer=extract_answer(response_as_seen(prompts[q], completion.text)), reference=example.answer,
            correct=verdict.score >= FULL_SCORE, format_ok=format_reward(completion.text, example).score >= FULL_SCORE,
            language=language_reward(completion.text, example).score,
            tokens=len(completion.completion_ids), finish_reason=completion.finish_reason, reason=verdict.reason,
        ))
    return out


def summarize(records: list[SampleRecord], questions: int, k: int) -> EvalMetrics:
    """Aggregate graded responses into the evaluation's numbers (pure: no model, no I/O)."""
    greedy = [r for r in records if r.mode == "greedy"]
    sampled = [r for r in records if r.mode == "sample"]
    by_question: list[list[SampleRecord]] = [[] for _ in range(questions)]
    for r in sampled:
        by_question[r.question].append(r)
    correct = [[r.correct for r in rows] for rows in by_question]
    answers = [[r.answer for r in rows] for rows in by_question]
    # Vote lookups reuse the grades already given: the first sample with that answer decides.
    grades = [{} for _ in range(questions)]
    for r in sampled:
        if r.answer is not None:
            grades[r.question].setdefault(r.answer, r.correct)

    behaviour = sampled if k else greedy
    visible = [response_as_seen(r.prompt, r.completion) for r in behaviour]
    reflections = [reflection_counts(text) for text in visible]
    return EvalMetrics(
        questions=questions,
        k=k,
        greedy_accuracy=mean([float(r.correct) for r in greedy]),
        pass_at_1=pass_at_1(correct) if k else None,
        pass_at_k=mean_pass_at_k(correct, k) if k else None,
        cons_at_k=cons_at_k(answers, grades) if k else None,
        format_rate=mean([float(r.format_ok) for r in behaviour]) or 0.0,
        language_consistency=mean([r.language for r in behaviour]) or 0.0,
        mean_response_tokens=mean([float(r.tokens) for r in behaviour]) or 0.0,
        truncated_rate=mean([float(r.finish_reason == "length") for r in behaviour]) or 0.0,
        scratchpad_rate=mean([float(uses_scratchpad(text)) for text in visible]) or 0.0,
        reflection_rate=mean([float(bool(c)) for c in reflections]) or 0.0,
        reflection_words=dict(sorted(sum(reflections, Counter()).items())),
    )


def response_as_seen(prompt: str, completion: str) -> str:
    """The response as a reader sees it: when the prompt opened <think> (a prefill or the
    template), that tag belongs to the response, for the scratchpad and answer extraction."""
    return ("<think>" if prompt_prefills_think(prompt) else "") + completion


def _progress_bar(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=not enabled, transient=True)
