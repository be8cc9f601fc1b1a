"""Sampling without `model.generate`: a KV-cache decoding loop that drops finished rows, and
an exact sampler that never sorts or multinomial-samples the full vocabulary.

Why: with a 151k-token vocabulary and completions of varied length, `generate` runs every row
until the longest one ends (most row-steps are padding after eos), and `torch.multinomial`
over 151k probabilities costs more than the LM head. Here each step costs only the rows
still running, and a draw costs one uniform per row on top of the softmax.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# The sampler sums the probabilities in blocks of this many tokens, picks a block, then a
# token inside it: two short cumulative sums instead of one over the whole vocabulary.
BLOCK = 1024
# Nucleus candidates per round: top-k with a growing k until the kept mass reaches top_p.
NUCLEUS_ROUNDS = (64, 1024, 16384)

RowsFinished = Callable[[list[list[int]]], list[bool]]


def sample_tokens(logits: torch.Tensor, temperature: float, top_p: float = 1.0,
                  overwrite: bool = False, with_logprobs: bool = False):
    """One token id per row of `logits` [rows, vocab]: greedy (first argmax) at temperature 0,
    else an exact draw from softmax(logits / temperature), restricted to the nucleus when
    top_p < 1. Uniforms come from the default generator of the logits' device, so a seeded
    caller (the engine's `_seeded`) gets reproducible draws. `overwrite=True` lets float32
    logits serve as scratch space (on CPU a fresh 64 x 151k buffer costs as much as the math).

    `with_logprobs`: also return each drawn token's log-prob under the distribution it was
    drawn from (temperature applied; with top-p, the nucleus renormalised), from the same
    weights and sums the draw used, so it costs a gather; greedy draws get 0 (a point mass)."""
    scores = logits.float()
    if temperature == 0:
        tokens = scores.argmax(dim=-1)
        return (tokens, torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)) if with_logprobs else tokens
    if not (overwrite and scores is logits):
        scores = scores.clone()
    if temperature != 1:
        scores.div_(temperature)
    tokens, logprobs = _sample_full(scores) if top_p >= 1 else _sample_nucleus(scores, top_p)
    return (tokens, logprobs) if with_logprobs else tokens


def nucleus_mask(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Which tokens [rows, vocab] top-p keeps for these (temperature-scaled) logits: the set
    the sampler draws from, found the same way."""
    weights = _unnormalised_softmax(logits.float().clone())
    mask = torch.zeros(weights.shape, dtype=torch.bool, device=weights.device)
    for rows, ids, _, kept in _nucleus_rounds(weights, top_p):
        taken = torch.arange(ids.shape[1], device=ids.device) < kept[:, None]
        mask[rows[:, None].expand_as(ids)[taken], ids[taken]] = True
    return mask


def _unnormalised_softmax(scores: torch.Tensor) -> torch.Tensor:
    """exp(scores - max), in place: dividing by the sum is left to whoever needs it."""
    return scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()


def _sample_full(scores: torch.Tensor) -> torch.Tensor:
    """Inverse CDF over the whole vocabulary, in two levels: one uniform picks a block by the
    blocks' masses, its remainder picks a token inside the block. Float64 for the small
    cumulative sums, so a token's chance is exact up to the float32 rounding of its own
    probability (a single float32 cumsum over 151k values would blur the tail)."""
    rows, vocab = scores.shape
    weights = _unnormalised_softmax(scores)
    full = vocab // BLOCK * BLOCK
    masses = [weights[:, :full].reshape(rows, -1, BLOCK).sum(dim=-1)] if full else []
    if full < vocab:
        masses.append(weights[:, full:].sum(dim=-1, keepdim=True))
    block_mass = torch.cat(masses, dim=-1).double()
    block_cdf = block_mass.cumsum(dim=-1)
    u = torch.rand(rows, dtype=torch.float64, device=scores.device) * block_cdf[:, -1]
    block = _invert(block_cdf, u, block_cdf[:, -1])
    # The uniform's remainder inside the chosen block, rescaled: still uniform there.
    below = (block_cdf.gather(1, block[:, None]) - block_mass.gather(1, block[:, None])).squeeze(1)
    inside = ((u - below) / block_mass.gather(1, block[:, None]).squeeze(1)).clamp(min=0.0, max=1.0)
    offsets = block[:, None] * BLOCK + torch.arange(BLOCK, device=scores.device)
    in_vocab = offsets < vocab
    block_weights = weights.gather(1, offsets.clamp(max=vocab - 1)).masked_fill(~in_vocab, 0.0)
    inner_cdf = block_weights.double().cumsum(dim=-1)
    tokens = block * BLOCK + _invert(inner_cdf, inside * inner_cdf[:, -1], inner_cdf[:, -1])
    return tokens, _logprob(weights, tokens, block_cdf[:, -1])


def _sample_nucleus(scores: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-p: inverse CDF within the nucleus (one uniform per row)."""
    out = torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)
    nucleus_mass = torch.empty(scores.shape[0], dtype=torch.float64, device=scores.device)
    weights = _unnormalised_softmax(scores)
    for rows, ids, cum, kept in _nucleus_rounds(weights, top_p):
        mass = cum.gather(1, (kept - 1)[:, None]).squeeze(1)
        u = torch.rand(len(rows), dtype=torch.float64, device=scores.device) * mass
        # Positions past the nucleus have cum >= mass > u: the search never reaches them.
        out[rows] = ids.gather(1, _invert(cum, u, mass)[:, None]).squeeze(1)
        nucleus_mass[rows] = mass
    return out, _logprob(weights, out, nucleus_mass)


def _logprob(weights: torch.Tensor, tokens: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """log(w_token / mass) for unnormalised weights w = exp(score - max): the drawn token's
    log-prob under the distribution of total `mass` it was drawn from (float64 ratio)."""
    picked = weights.gather(1, tokens[:, None]).squeeze(1).double()
    return (picked.log() - mass.log()).float()


def _nucleus_rounds(weights: torch.Tensor, top_p: float) -> Iterator[tuple[torch.Tensor, ...]]:
    """The nucleus of every row, found among its top-k weights with a growing k, so a small
    nucleus never pays for sorting the vocabulary (a row whose nucleus outgrows the last
    round is sorted whole). Yields, per round, (rows, ids, cum, kept) for the rows settled
    in it: their top-k token ids in descending order, the cumulative weights (float64) and
    how many the nucleus keeps.

    The rule is transformers' TopPLogitsWarper: a token is kept when the tokens more probable
    than it hold less than top_p of the mass (the smallest set whose mass reaches top_p;
    at least one token). Tokens of equal probability on the edge are split in topk's order,
    as the warper splits them in its sort's order."""
    vocab = weights.shape[1]
    need = top_p * weights.sum(dim=-1, dtype=torch.float64)
    pending = torch.arange(weights.shape[0], device=weights.device)
    k = min(NUCLEUS_ROUNDS[0], vocab)
    while len(pending):
        values, ids = weights[pending].topk(k, dim=-1, sorted=True)
        values = values.double()
        cum = values.cumsum(dim=-1)
        settled = cum[:, -1] >= need[pending] if k < vocab else torch.ones_like(cum[:, -1], dtype=torch.bool)
        if settled.any():
            where = settled.nonzero().squeeze(1)
            kept = ((cum[where] - values[where]) < need[pending[where], None]).sum(dim=-1).clamp(min=1)
            yield pending[where], ids[where], cum[where], kept
        # Each token past the k-th weighs at most the k-th: a lower bound on the nucleus size
        # picks the next round (skipping rounds that cannot hold it).
        short = ~settled
        if short.any():
            missing = (need[pending[short]] - cum[short, -1]) / values[short, -1]
            at_least = k + int(missing.max().ceil())
            k = next((r for r in NUCLEUS_ROUNDS if r > k and r >= at_least and r < vocab), vocab)
        pending = pending[short]


def _invert(cdf: torch.Tensor, u: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """The first index whose cumulative mass exceeds u (so zero-mass entries are never
    picked). u is kept strictly below `total`, the mass drawn from (rand() * total can round
    up to it), so the index lands where cdf < total still holds for its predecessor."""
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, u[:, None], right=True).squeeze(1).clamp(max=cdf.shape[1] - 1)


def decode(model: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float,
           top_p: float = 1.0, eos_ids: Sequence[int], pad_id: int,
           rows_finished: RowsFinished | None = None, with_logprobs: bool = False):
    """Sample up to `max_new_tokens` after each prompt (token ids, left-padded into one batch)
    and return the new tokens of every row: through its eos (kept), up to the step where
    `rows_finished` (given the new tokens of the rows still running) says it is done, or
    `max_new_tokens` long. `with_logprobs`: (tokens, log-probs), each token's log-prob under
    the distribution it was drawn from (`sample_tokens`).

    The prompts are prefilled once, with the LM head on the last position only; then one
    token per step for the rows still running. A row that ends leaves the batch: the KV cache,
    attention mask and positions are index-selected, so later steps cost only the live rows.
    Positions follow `generate`: cumsum(attention_mask) - 1, so left padding changes nothing.
    """
    device = next(model.parameters()).device
    width = max(len(ids) for ids in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        if ids:
            input_ids[row, width - len(ids):] = torch.tensor(list(ids), dtype=torch.long)
            mask[row, width - len(ids):] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    # As in generate: no padding, no mask (the attention takes its plain causal path).
    attention = mask if not bool(mask.all()) else None
    cache = _new_cache(model, capacity=width + max_new_tokens)
    cache_arg = _cache_argument(model)
    logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True,
                   logits_to_keep=1, **{cache_arg: cache}).logits[:, -1]
    next_position = positions[:, -1] + 1
    eos = set(eos_ids)
    live = list(range(len(prompts)))  # the original row of each batch row
    new_tokens: list[list[int]] = [[] for _ in prompts]
    new_logprobs: list[list[float]] = [[] for _ in prompts]
    for step in range(max_new_tokens):
        chosen, logprobs = sample_tokens(logits, temperature, top_p, overwrite=True, with_logprobs=True)
        for row, token, logprob in zip(live, chosen.tolist(), logprobs.tolist()):
            new_tokens[row].append(token)
            new_logprobs[row].append(logprob)
        if step == max_new_tokens - 1:
            break
        done = [new_tokens[row][-1] in eos for row in live]
        if rows_finished is not None:
            running = [i for i, d in enumerate(done) if not d]
            for i, stop in zip(running, rows_finished([new_tokens[live[i]] for i in running])):
                done[i] = stop
        if all(done):
            break
        if any(done):
            order = compacted_order(done)
            _keep_rows(cache, order)  # every layer's keys and values
            keep = torch.tensor(order, device=device)
            chosen, next_position = chosen[keep], next_position[keep]
            attention = attention[keep] if attention is not None else None
            live = [live[i] for i in order]
        if attention is not None:
            attention = torch.cat([attention, attention.new_ones((len(live), 1))], dim=-1)
        logits = model(input_ids=chosen[:, None], attention_mask=attention, position_ids=next_position[:, None],
                       use_cache=True, **{cache_arg: cache}).logits[:, -1]
        next_position = next_position + 1
    return (new_tokens, new_logprobs) if with_logprobs else new_tokens


def compacted_order(done: Sequence[bool]) -> list[int]:
    """The rows to keep when the `done` ones leave, in the order that moves fewest: the live
    rows past the new end fill the finished rows' slots, every other row stays where it is
    (so a reserved cache copies only the moved rows, not the whole batch)."""
    kept = len(done) - sum(done)
    movers = iter(i for i in range(kept, len(done)) if not done[i])
    return [next(movers) if done[i] else i for i in range(kept)]


def _keep_rows(cache: Any, order: list[int]) -> None:
    """Keep the batch rows `order` (new row j = old row order[j]) in every layer's cache."""
    indices = None
    for layer in cache.layers:
        if isinstance(layer, ReservedLayer):
            layer.keep_rows(order)
        else:
            indices = torch.tensor(order, device=layer.keys.device) if indices is None else indices
            layer.batch_select_indices(indices)


def _new_cache(model: Any, capacity: int) -> Any:
    """The model's own DynamicCache, with every plain full-attention layer swapped for one
    that writes into a buffer reserved for the whole decode (sliding-window and other layer
    kinds are kept as transformers builds them)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [ReservedLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


class ReservedLayer(DynamicLayer):
    """A cache layer whose keys and values live in a buffer of `capacity` positions
    reserved at the prefill: a decode step writes one position in place, where
    DynamicLayer concatenates the whole cache again (a copy that grows with the length
    and was three quarters of a small model's decode time). `keys`/`values` are views
    of the filled part, which is what attention reads."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity, self.length, self.rows = capacity, 0, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        rows = key_states.shape[0]
        self.key_buffer = key_states.new_empty((rows, key_states.shape[1], self.capacity, key_states.shape[-1]))
        self.value_buffer = value_states.new_empty((rows, value_states.shape[1], self.capacity,
                                                    value_states.shape[-1]))
        self.rows = rows
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:  # more tokens than reserved (not in decode's use): grow
            self._move(slice(None), capacity=max(end, 2 * self.capacity))
        self.key_buffer[:self.rows, :, self.length:end] = key_states
        self.value_buffer[:self.rows, :, self.length:end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._move(indices, capacity=self.capacity)

    def keep_rows(self, order: list[int]) -> None:
        """Keep rows `order` of the batch, copying only the rows that change slot: with
        `compacted_order` that is the few live rows moved into finished rows' places."""
        if not self.is_initialized:
            return
        if any(not 0 <= i < self.rows for i in order):
            raise IndexError(f"rows {order} out of range for a batch of {self.rows}")
        moved = [j for j, i in enumerate(order) if i != j]
        if moved:
            source = torch.tensor([order[j] for j in moved], device=self.device)
            target = torch.tensor(moved, device=self.device)
            for buffer in (self.key_buffer, self.value_buffer):
                buffer[target, :, :self.length] = buffer[source, :, :self.length]  # the right side is a copy
        self.rows = len(order)
        self._expose()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative count of tokens to remove, got {tokens_to_remove}")
        if self.is_initialized and tokens_to_remove:
            self.length = max(self.length + tokens_to_remove, 0)
            self._expose()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self.key_buffer = self.key_buffer[:self.rows].repeat_interleave(repeats, dim=0)
            self.value_buffer = self.value_buffer[:self.rows].repeat_interleave(repeats, dim=0)
            self.rows *= repeats
            self._expose()

    def reset(self) -> None:
        self.length = 0
        super().reset()

    def _move(self, rows: slice | torch.Tensor, capacity: int) -> None:
        """Copy the filled part of the chosen rows into fresh buffers of `capacity`."""
        for name in ("key_buffer", "value_buffer"):
            old = getattr(self, name)[:self.rows][rows, :, :self.length]
            new = old.new_empty((old.shape[0], old.shape[1], capacity, old.shape[-1]))
            new[:, :, :self.length] = old
            setattr(self, name, new)
        self.capacity, self.rows = capacity, self.key_buffer.shape[0]
        self._expose()

    def _expose(self) -> None:
        self.keys = self.key_buffer[:self.rows, :, :self.length]
        self.values = self.value_buffer[:self.rows, :, :self.length]


def _cache_argument(model: Any) -> str:
    """The forward argument that takes the cache: `cache` since transformers 5.x renamed
    `past_key_values` (still accepted, with a deprecation warning)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


