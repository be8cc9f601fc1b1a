"""A preference reward model for general prompts (R1 stage 4): any local sequence-classification
checkpoint with one output scores a (question, answer) pair.

RECIPE: rule rewards for reasoning, a learned reward only where rules cannot judge (it can be
hacked). By default the model sees the final summary (the text after `</think>`), as R1 judged
helpfulness; `scope="full"` scores the whole response (harmlessness). torch is imported only
when a reward model is loaded, so `import thinkrl.rewards` stays light.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any, Literal

from thinkrl.data.example import Example
from thinkrl.errors import ConfigError
from thinkrl.rewards.base import RewardResult, register

Scale = Literal["sigmoid", "raw"]
Scope = Literal["summary", "full"]

_MODELS: dict[str, tuple[Any, Any]] = {}
_LOCK = threading.Lock()


def load_reward_model(path: str) -> tuple[Any, Any]:
    """(model, tokenizer) for `path`, loaded once per process."""
    with _LOCK:
        if path not in _MODELS:
            _MODELS[path] = _load(path)
        return _MODELS[path]


def _load(path: str) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from thinkrl.models import load_tokenizer, resolve_model_path

    folder = resolve_model_path(path)
    config = AutoConfig.from_pretrained(folder)
    # A causal LM folder would load with a freshly initialised score head and give random
    # rewards without a word; refuse it instead.
    if not any(a.endswith("ForSequenceClassification") for a in (config.architectures or [])):
        raise ConfigError(f"reward model {path} is not a sequence-classification checkpoint "
                          f"(architectures: {config.architectures}); train or convert one with num_labels=1")
    if config.num_labels != 1:
        raise ConfigError(f"reward model {path} has {config.num_labels} labels; a reward model needs num_labels=1")
    tokenizer = load_tokenizer(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, config=config)
    if model.config.pad_token_id is None:  # the score is read at the last non-pad token
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def reward_text(tokenizer: Any, question: str, answer: str) -> tuple[str, bool]:
    """The text the reward model reads, and whether the tokenizer should add special tokens
    (not when a chat template already wrote them)."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return tokenizer.apply_chat_template(messages, tokenize=False), False
    return f"{question}\n\n{answer}", True


def score_batch(path: str, pairs: Sequence[tuple[str, str]], scale: Scale = "sigmoid", max_length: int = 2048,
                batch_size: int = 16) -> list[float]:
    """Reward-model scores of (question, answer) pairs, in order."""
    import torch

    if scale not in ("sigmoid", "raw"):
        raise ConfigError(f"reward model scale must be 'sigmoid' or 'raw', got {scale!r}")
    if max_length < 2 or batch_size < 1:
        raise ConfigError(f"reward model needs max_length >= 2 and batch_size >= 1, got {max_length} and {batch_size}")
    model, tokenizer = load_reward_model(path)
    device = next(model.parameters()).device
    scores: list[float] = []
    for start in range(0, len(pairs), batch_size):
        texts = [reward_text(tokenizer, q, a) for q, a in pairs[start:start + batch_size]]
        rows = [tokenizer(text, add_special_tokens=special)["input_ids"] for text, special in texts]
        # Keep the end when cutting: the score is read at the last token, after the answer.
        rows = [ids[-max_length:] for ids in rows]
        width = max(len(ids) for ids in rows)
        # Right padding keeps every row's positions as they are alone, so a batch scores
        # exactly like single pairs; the model reads each row at its last non-pad token.
        input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for r, ids in enumerate(rows):
            input_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[r, :len(ids)] = 1
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
        scores.extend(float(x) for x in logits[:, 0].float().cpu())
    return [1.0 / (1.0 + math.exp(-s)) if scale == "sigmoid" else s for s in scores]


def response_part(completion: str, scope: Scope) -> str:
    if scope == "summary" and "</think>" in completion:
        return completion.rsplit("</think>", 1)[1].strip()
    return completion


@register("reward_model", isolate=False)
def reward_model(completion: str, example: Example, path: str | None = None, scale: Scale = "sigmoid",
                 max_length: int = 2048, scope: Scope = "summary") -> RewardResult:
    """The reward model's score of (example.prompt, completion); sigmoid keeps it in (0, 1)."""
    if not path:
        raise ConfigError("reward 'reward_model' needs option 'path' (a sequence-classification checkpoint folder)")
    if scope not in ("summary", "full"):
        raise ConfigError(f"reward 'reward_model': scope must be 'summary' or 'full', got {scope!r}")
    score = score_batch(path, [(example.prompt, response_part(completion, scope))], scale=scale, max_length=max_length)[0]
    return RewardResult(score, "scored")


__all__ = ["load_reward_model", "response_part", "reward_model", "reward_text", "score_batch"]
