"""The gate: is the tiny model a base that RL can improve?

A useful base answers held-out problems badly when it answers at once, well when it is
made to write its scratchpad (prompt prefilled with `<think>`), and writes a scratchpad
by itself now and then when sampled, so that RL finds rewarded thinking to reinforce.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from thinkrl.data.example import Example
from thinkrl.data.tasks import HELDOUT_SEED, Task
from thinkrl.tiny.corpus import prompt_text

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@dataclass
class GateReport:
    """Held-out accuracies of a tiny model (greedy unless said otherwise)."""

    task: str
    problems: int
    greedy_accuracy: float
    greedy_think_rate: float
    forced_think_accuracy: float
    sampled_accuracy: float
    sampled_think_rate: float
    sampled_temperature: float
    passed: bool = False

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    def lines(self) -> list[str]:
        return [
            f"held-out {self.task} problems (seed {HELDOUT_SEED}): {self.problems}",
            f"greedy accuracy:          {self.greedy_accuracy:.3f} (thinks {self.greedy_think_rate:.0%})",
            f"forced-scratchpad acc.:   {self.forced_think_accuracy:.3f}",
            (f"sampled (T={self.sampled_temperature}) accuracy: {self.sampled_accuracy:.3f} "
             f"(thinks {self.sampled_think_rate:.0%})"),
            f"gate: {'passed' if self.passed else 'NOT passed'}",
        ]


def extract_answer(completion: str) -> str | None:
    """Text inside the first <answer> tags, or None when there are none."""
    match = _ANSWER.search(completion)
    return match.group(1) if match else None


def thinks(completion: str) -> bool:
    """Whether a completion opens with a non-empty scratchpad."""
    text = completion.lstrip()
    if not text.startswith("<think>") or "</think>" not in text:
        return False
    return text[len("<think>"):text.index("</think>")].strip() != ""


@torch.no_grad()
def complete(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int,
             temperature: float = 0.0, batch_size: int = 128) -> list[str]:
    """Completions of `prompts` with `model.generate` (left padding, KV cache)."""
    was_training = model.training
    model.eval()
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True, padding_side="left")
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 \
            else {"do_sample": False}
        ids = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id, **sampling)
        out.extend(tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True))
    model.train(was_training)
    return out


def accuracy(task: Task, examples: list[Example], completions: list[str]) -> float:
    right = 0
    for ex, text in zip(examples, completions):
        answer = extract_answer(text)
        right += answer is not None and task.check(answer, ex)
    return right / max(1, len(examples))


def evaluate_gate(model: Any, tokenizer: Any, task: Task, problems: int = 200, samples: int = 2,
                  temperature: float = 1.0, max_new_tokens: int = 72, seed: int = 0) -> GateReport:
    """Greedy, forced-scratchpad and sampled accuracy on held-out problems."""
    examples = task.generate(problems, HELDOUT_SEED)
    prompts = [prompt_text(ex.prompt) for ex in examples]
    greedy = complete(model, tokenizer, prompts, max_new_tokens)
    forced = complete(model, tokenizer, [p + "<think>" for p in prompts], max_new_tokens)
    forced = ["<think>" + text for text in forced]
    torch.manual_seed(seed)
    sampled = complete(model, tokenizer, [p for p in prompts for _ in range(samples)], max_new_tokens, temperature)
    repeated = [ex for ex in examples for _ in range(samples)]
    return GateReport(
        task=task.name, problems=len(examples),
        greedy_accuracy=accuracy(task, examples, greedy),
        greedy_think_rate=sum(map(thinks, greedy)) / len(greedy),
        forced_think_accuracy=accuracy(task, examples, forced),
        sampled_accuracy=accuracy(task, repeated, sampled),
        sampled_think_rate=sum(map(thinks, sampled)) / len(sampled),
        sampled_temperature=temperature,
    )
