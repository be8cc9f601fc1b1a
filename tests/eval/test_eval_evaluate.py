"""`evaluate` with the real reward registry: scripted responses with hand-computed metrics,
and a tiny random model whose metrics must agree with its own samples.jsonl."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from thinkrl.data.example import Example
from thinkrl.eval.config import EvalSettings
from thinkrl.eval.evaluate import evaluate
from thinkrl.eval.report import write_results
from thinkrl.rollout.base import Completion, SamplingParams
from thinkrl.rollout.transformers_engine import TransformersEngine


def r1(think: str, answer: str) -> str:
    return f"<think>{think}</think> <answer>{answer}</answer>"


# Per question: the greedy response, then the k=4 sampled ones.
SCRIPT = {
    "How many eggs": [r1("16 - 3 - 4 = 9, 9 * 2 = 18", "18"),
                      r1("16-3-4=9; 9*2 = 18. Wait, let me verify: yes.", "18"),
                      r1("quick guess", "18"),
                      r1("16 - 3 = 13", "26"),
                      "I think it is 18 but I will not say"],  # no answer, no format
    "How many bolts": [r1("2 + 1", "4"),
                       r1("2 + 2 = 4", "4"),
                       r1("Hmm, 2 + 1 = 3, check: 3", "3"),
                       r1("2 + 2 = 4", "4"),
                       r1("half of 2 is 1, 2 + 1 = 3", "3")],
    "What is 2 + 3": [r1("2 + 3 = 5", "5"),
                      "<answer>5</answer>",  # right answer, no scratchpad
                      r1("", "5"),
                      r1("2 + 3 = 5", "5"),
                      r1("2 + 3 = 5. Wait, wait.", "5")],
}
QUESTIONS = [
    Example(prompt="How many eggs does Janet sell?", answer="18", id="eggs"),
    Example(prompt="How many bolts in total?", answer="3", id="bolts"),
    Example(prompt="What is 2 + 3?", answer="5", id="sum"),
]


class ScriptedEngine:
    """A rollout engine that answers from a script: greedy gets the first response, sampling
    the next n. The last sample of every question is marked truncated."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.calls: list[SamplingParams] = []

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        self.calls.append(params)
        out = []
        for i, prompt in enumerate(prompts):
            script = next(v for key, v in SCRIPT.items() if key in prompt)
            texts = script[:1] if params.temperature == 0 else script[1:1 + params.n]
            for j, text in enumerate(texts):
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                last = params.temperature > 0 and j == params.n - 1
                out.append(Completion(prompt_index=i, text=text, completion_ids=ids,
                                      finish_reason="length" if last else "stop"))
        return out


@pytest.fixture(scope="module")
def qwen_tok(qwen_tokenizer_dir):
    return AutoTokenizer.from_pretrained(qwen_tokenizer_dir)


def test_scripted_responses_give_hand_computed_metrics(qwen_tok, tmp_path):
    engine = ScriptedEngine(qwen_tok)
    settings = EvalSettings(k=4, batch_size=8)  # 2 prompts per sampling call: chunks of 2 and 1
    result = evaluate(engine, qwen_tok, QUESTIONS, settings, progress=False)
    m = result.metrics
    # greedy: eggs 18 right, bolts 4 wrong, sum 5 right
    assert m.greedy_accuracy == pytest.approx(2 / 3)
    # samples: eggs 2/4, bolts 2/4, sum 4/4 right
    assert m.pass_at_1 == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert m.pass_at_k == pytest.approx(1.0)
    # votes: eggs "18" (2 of 3 answers) right; bolts "4" vs "3" tie -> first seen "4", wrong; sum "5" right
    assert m.cons_at_k == pytest.approx(2 / 3)
    # format: eggs 3/4, bolts 4/4, sum 2/4 (the bare <answer>, and the empty think block)
    assert m.format_rate == pytest.approx(9 / 12)
    # scratchpad with content: eggs 3, bolts 4, sum 2 (empty think and no think do not count)
    assert m.scratchpad_rate == pytest.approx(9 / 12)
    assert m.truncated_rate == pytest.approx(3 / 12)
    assert m.reflection_words == {"check": 1, "hmm": 1, "verify": 1, "wait": 3}
    assert m.reflection_rate == pytest.approx(3 / 12)
    assert len(result.samples) == 3 + 12
    # chunked sampling calls get distinct seeds, all derived from the configured one
    assert [p.seed for p in engine.calls if p.temperature > 0] == [0, 1]

    folder = write_results(result, tmp_path / "out")
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert json.loads((folder / "metrics.json").read_text())["cons_at_k"] == pytest.approx(2 / 3)
    eggs = [r for r in rows if r["id"] == "eggs" and r["mode"] == "sample"]
    assert [r["answer"] for r in eggs] == ["18", "18", "26", None]
    assert [r["correct"] for r in eggs] == [True, True, False, False]
    assert [r["sample"] for r in eggs] == [0, 1, 2, 3]


def test_prefill_counts_as_part_of_the_response(qwen_tok):
    class Prefilled(ScriptedEngine):
        def generate(self, prompts, params):
            assert all(p.endswith("<think>") for p in prompts)
            return [Completion(prompt_index=i, text=" 2 + 3 = 5 </think> <answer>5</answer>",
                               completion_ids=[1, 2, 3]) for i in range(len(prompts)) for _ in range(params.n)]

    settings = EvalSettings(k=2, prefill="<think>")
    m = evaluate(Prefilled(qwen_tok), qwen_tok, QUESTIONS[2:], settings, progress=False).metrics
    assert m.pass_at_1 == 1.0 and m.greedy_accuracy == 1.0
    assert m.format_rate == 1.0  # the reward knows the prompt opened <think>
    assert m.scratchpad_rate == 1.0


def test_tiny_model_metrics_agree_with_its_samples(qwen_tok, data_dir, tmp_path):
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(qwen_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    engine = TransformersEngine(Qwen2ForCausalLM(config), qwen_tok, batch_size=8)
    rows = [json.loads(line) for line in (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[:3]]
    examples = [Example(prompt=r["question"], answer=r["answer"].split("####")[-1].strip(), id=str(i))
                for i, r in enumerate(rows)]
    settings = EvalSettings(k=3, max_new_tokens=6, temperature=1.0, batch_size=4)
    result = evaluate(engine, qwen_tok, examples, settings, progress=False)
    write_results(result, tmp_path)
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    check_metrics_match_samples(metrics, samples, questions=3, k=3)
    assert metrics["mean_response_tokens"] == 6.0 and metrics["truncated_rate"] == 1.0


def check_metrics_match_samples(metrics: dict, samples: list[dict], questions: int, k: int) -> None:
    """Recompute greedy accuracy, pass@1 and cons@k from samples.jsonl by hand."""
    greedy = [s for s in samples if s["mode"] == "greedy"]
    sampled = [s for s in samples if s["mode"] == "sample"]
    assert len(greedy) == questions and len(sampled) == questions * k
    assert metrics["greedy_accuracy"] == pytest.approx(sum(s["correct"] for s in greedy) / questions)
    per_question = [[s for s in sampled if s["question"] == q] for q in range(questions)]
    assert metrics["pass_at_1"] == pytest.approx(
        sum(sum(s["correct"] for s in rows) / k for rows in per_question) / questions)
    votes = 0
    for rows in per_question:
        counts = Counter(s["answer"] for s in rows if s["answer"] is not None)
        if counts:
            top = max(counts.values())
            voted = next(s for s in rows if s["answer"] is not None and counts[s["answer"]] == top)
            votes += voted["correct"]
    assert metrics["cons_at_k"] == pytest.approx(votes / questions)
    assert metrics["format_rate"] == pytest.approx(sum(s["format_ok"] for s in sampled) / len(sampled))
    assert metrics["mean_response_tokens"] == pytest.approx(sum(s["tokens"] for s in sampled) / len(sampled))
