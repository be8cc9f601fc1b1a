"""From sampled completions to training tensors, and the policy's log-probs on them.

Prompt and completion ids are concatenated per sample and right-padded; a mask marks the
completion tokens, the only ones the loss sees (prompt and padding must not move the policy).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from thinkrl.algos import entropy_from_logits, token_logprobs
from thinkrl.rollout.base import Completion


@dataclass
class PolicyBatch:
    """Samples ready for a forward pass. Targets are input_ids shifted by one, so every
    per-token tensor here has T-1 columns: column t scores token t+1."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    loss_mask: torch.Tensor  # [B, T-1], 1 where the target is a completion token

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> PolicyBatch:
        return PolicyBatch(self.input_ids.to(device), self.attention_mask.to(device), self.loss_mask.to(device))

    def select(self, index: torch.Tensor) -> PolicyBatch:
        """Rows `index`, trimmed to their own longest sequence (less padding, less compute)."""
        attention = self.attention_mask[index]
        width = int(attention.sum(dim=1).max())
        return PolicyBatch(self.input_ids[index, :width], attention[:, :width], self.loss_mask[index, : width - 1])


def build_policy_batch(completions: list[Completion], pad_id: int) -> PolicyBatch:
    rows = [c.prompt_ids + c.completion_ids for c in completions]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width - 1), dtype=torch.float32)
    for i, (row, c) in enumerate(zip(rows, completions)):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention[i, : len(row)] = 1
        start = len(c.prompt_ids) - 1  # the logit at position p-1 predicts the first completion token
        loss_mask[i, start : start + len(c.completion_ids)] = 1.0
    return PolicyBatch(input_ids, attention, loss_mask)


def policy_logprobs(model, batch: PolicyBatch, temperature: float, with_entropy: bool = False):
    """Log-probs of each target token under `model` (divided by the sampling temperature, so
    the ratio compares the same distributions the rollout sampled from)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    logits = logits[:, :-1, :]
    logp = token_logprobs(logits, batch.input_ids[:, 1:], temperature=temperature)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = entropy_from_logits(logits.detach() / temperature)
    return logp, entropy


@torch.no_grad()
def frozen_logprobs(model, batch: PolicyBatch, temperature: float, micro_batch_size: int,
                    disable_adapter: bool = False) -> torch.Tensor:
    """Log-probs without gradients, in micro-batches: the old policy (mu > 1) or the reference.
    With a LoRA model the reference is the same model with its adapter switched off."""
    out = torch.zeros_like(batch.loss_mask)
    context = model.disable_adapter() if disable_adapter else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    with context:
        for start in range(0, len(batch), micro_batch_size):
            index = torch.arange(start, min(start + micro_batch_size, len(batch)))
            part = batch.select(index)
            logp, _ = policy_logprobs(model, part, temperature)
            out[index, : logp.shape[1]] = logp.float()
    model.train(was_training)
    return out
