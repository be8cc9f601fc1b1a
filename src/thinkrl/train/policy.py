"""From sampled completions to training tensors, and the policy's log-probs on them.

Prompt and completion ids are concatenated per sample and right-padded; a mask marks the
completion tokens, the only ones the loss sees (prompt and padding must not move the policy).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass

import torch

from thinkrl.algos import entropy_from_logits, token_logprobs
from thinkrl.algos.head_logprobs import head_logprobs
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


def sampler_logprobs(batch: PolicyBatch, completions: list[Completion]) -> torch.Tensor | None:
    """[B, T-1] the engine's log-prob of each completion token (under the distribution it drew
    from), laid out like `policy_logprobs`; None when any completion lacks them."""
    if any(c.logprobs is None or len(c.logprobs) != len(c.completion_ids) for c in completions):
        return None
    values = torch.tensor([lp for c in completions for lp in c.logprobs], dtype=torch.float32)
    out = torch.zeros(batch.loss_mask.shape, dtype=torch.float32)
    return out.masked_scatter(batch.loss_mask.bool().cpu(), values).to(batch.loss_mask.device)


def policy_logprobs(model, batch: PolicyBatch, temperature: float, with_entropy: bool = False,
                    chunk_tokens: int | None = None, pack: bool | None = None, entropy_grad: bool = False):
    """[B, T-1] log-probs of each completion token under `model` (0 elsewhere), divided by
    the sampling temperature so the ratio compares the distributions the rollout sampled
    from; with `with_entropy`, the entropies there too (a metric, without gradient unless
    `entropy_grad`: an entropy bonus trains on it).

    Only the completion positions reach the LM head (`logits_to_keep`), and for the heads of
    known architectures the log-probs and entropies come from hidden states in chunks of
    `chunk_tokens` (`head_logprobs`; None: 32 MiB of logits a chunk on CPU), so no [tokens,
    vocabulary] logits tensor is ever whole.
    With flash-attention (varlen) the rows go in as one packed sequence, position ids
    restarting per row: no padding is computed. Other attention kernels would need a dense
    [tokens, tokens] mask for a packed row, costlier than the padding it saves, so there the
    rows stay padded (the micro-batches group rows of similar length, `token_microbatches`).
    `pack` forces either (None: as the attention kernel says). `chunk_tokens=0`, or a model
    whose forward takes no `logits_to_keep`, runs the padded full-logits forward instead (the
    reference path)."""
    mask = batch.loss_mask.bool()
    if chunk_tokens == 0 or not _takes_logits_to_keep(model):
        return _padded_logprobs(model, batch, temperature, with_entropy, entropy_grad)
    real = batch.attention_mask.bool()
    keep = torch.zeros_like(real)
    keep[:, :-1] = mask  # hidden state t predicts token t + 1
    targets = batch.input_ids[:, 1:][mask]
    if packs_rows(model) if pack is None else pack:  # one packed row: position ids restart per sample, no padding
        positions = torch.cat([torch.arange(int(n), device=real.device) for n in real.sum(dim=1)])
        inputs = {"input_ids": batch.input_ids[real][None], "position_ids": positions[None], "logits_to_keep": keep[real][None]}
    else:
        inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "logits_to_keep": keep}
    with _chunked_head(model, targets, temperature, chunk_tokens) as chunked:
        out = model(**inputs, use_cache=False).logits
    if chunked:
        picked, entropies = out[:, 0], out[:, 1]
    else:  # [N, V] logits of the completion positions only
        picked = token_logprobs(out[None], targets[None], temperature=temperature)[0]
        entropies = None
        if with_entropy:
            entropies = entropy_from_logits((out if entropy_grad else out.detach())[None], temperature)[0]
    zeros = batch.loss_mask.new_zeros(mask.shape, dtype=picked.dtype)
    logp = zeros.masked_scatter(mask, picked)
    entropy = None
    if with_entropy:
        entropy = zeros.masked_scatter(mask, entropies if entropy_grad else entropies.detach())
    return logp, entropy


def _padded_logprobs(model, batch: PolicyBatch, temperature: float, with_entropy: bool, entropy_grad: bool = False):
    """The reference path: a padded forward and the logits of every position."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    logits = logits[:, :-1, :]
    logp = token_logprobs(logits, batch.input_ids[:, 1:], temperature=temperature) * batch.loss_mask
    entropy = None
    if with_entropy:
        entropy = entropy_from_logits(logits if entropy_grad else logits.detach(), temperature) * batch.loss_mask
    return logp, entropy


# Architectures whose causal-LM forward returns lm_head(hidden) untouched (no soft-capping or
# logit scaling after the head), so the head's work can be done by `head_logprobs`.
PLAIN_HEAD_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "phi3", "olmo2",
                               "smollm3", "deepseek_v3"})


def _base_model(model):
    """The transformers model under DDP's and peft's wrappers."""
    model = getattr(model, "module", model)  # DDP
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@functools.cache
def _forward_takes(cls: type, name: str) -> bool:
    return name in inspect.signature(cls.forward).parameters


def packs_rows(model) -> bool:
    """Whether the model's attention takes packed rows without a dense mask (flash-attention)."""
    return "flash" in str(getattr(_base_model(model).config, "_attn_implementation", ""))


def _takes_logits_to_keep(model) -> bool:
    return _forward_takes(type(_base_model(model)), "logits_to_keep")


@contextlib.contextmanager
def _chunked_head(model, targets: torch.Tensor, temperature: float, chunk_tokens: int):
    """While the model runs, its LM head (a plain Linear of a known architecture) returns
    [N, 2] = (log-prob of the target, entropy) per kept position instead of [N, V] logits.
    It runs inside the model's forward, where FSDP has gathered the head's weight (tied
    to the embedding or not). Yields whether the head was replaced."""
    base = _base_model(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    plain = type(head) is torch.nn.Linear and getattr(base.config, "model_type", None) in PLAIN_HEAD_MODELS
    if not plain:
        yield False
        return

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        logp, entropy = head_logprobs(hidden, head.weight, targets, temperature, head.bias, chunk_tokens)
        return torch.stack([logp, entropy], dim=-1)

    head.forward = forward
    try:
        yield True
    finally:
        del head.forward


@torch.no_grad()
def frozen_logprobs(model, batch: PolicyBatch, temperature: float, micro_batches: list[list[int]] | None = None,
                    chunk_tokens: int | None = None, disable_adapter: bool = False) -> torch.Tensor:
    """Log-probs without gradients, a micro-batch (a list of rows) at a time (all rows at once
    without `micro_batches`): the policy that sampled the batch (when more than one
    optimiser step uses it) or the reference. With a LoRA model the
    reference is the same model with its adapter switched off."""
    out = torch.zeros_like(batch.loss_mask)
    context = model.disable_adapter() if disable_adapter else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    with context:
        for rows in micro_batches or [list(range(len(batch)))]:
            index = torch.tensor(rows, device=batch.input_ids.device)
            part = batch.select(index)
            logp, _ = policy_logprobs(model, part, temperature, chunk_tokens=chunk_tokens)
            out[index, : logp.shape[1]] = logp.float()
    model.train(was_training)
    return out
