"""The default rollout engine: batched sampling from a transformers model, on CPU or one GPU.

It wraps the live model object (the GRPO trainer passes the policy it is training), so
weights are never copied: the next call samples from whatever the model is now. Sampling runs
thinkrl's own decoding loop (rollout/decode.py: finished rows leave the batch, a cheap exact
sampler) or, for comparison, `model.generate`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from thinkrl.rollout.base import Completion, SamplingParams
from thinkrl.rollout.decode import decode

DECODERS = ("thinkrl", "generate")


class TransformersEngine:
    """Sample completions from a causal LM (KV cache on, left padding).

    Prompts are already-templated strings, so they are tokenised without special tokens:
    a chat template writes its own markers, and letting the tokenizer add them again would
    double a bos or, for tokenizers that append one, put an eos at the end of every prompt.
    The one exception is a bos-using tokenizer (Llama, Mistral): a prompt that does not
    start with bos gets it, as the model saw in pretraining. Qwen has no bos, so nothing is
    added there.

    `batch_size` counts sequences (prompts x n) decoded together; bigger requests are split
    into chunks. `on_batch(done, total)` is called after each chunk (progress bars).
    `decoder`: "thinkrl" (decode.py; rows that finish stop costing anything) or "generate"
    (transformers' `model.generate`, every row runs until the chunk's longest ends), kept to
    compare the two in tests and benchmarks.
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 64,
                 on_batch: Callable[[int, int], None] | None = None, decoder: str = "thinkrl") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.on_batch = on_batch
        self.decoder = decoder
        self.eos_ids = _eos_ids(model, tokenizer)
        if not self.eos_ids:
            raise ValueError("neither the model's generation config nor the tokenizer names an eos token")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.bos_id = default_bos(tokenizer)

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        """len(prompts) * params.n completions, grouped by prompt in order."""
        if params.n < 1 or params.max_new_tokens < 1 or params.temperature < 0:
            raise ValueError(f"need n >= 1, max_new_tokens >= 1 and temperature >= 0, got {params}")
        prompt_ids = [self.encode_prompt(p) for p in prompts]
        # One row per sample, the n samples of a prompt next to each other.
        rows = [(i, ids) for i, ids in enumerate(prompt_ids) for _ in range(params.n)]
        stops = tuple(s for s in params.stop if s)
        out: list[Completion] = []
        with _eval_mode(self.model), torch.no_grad(), _seeded(params.seed, self._device()):
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size]
                tokens, logprobs = (self._decode_chunk(chunk, params, stops) if self.decoder == "thinkrl"
                                    else self._generate_chunk(chunk, self._generation_config(params), stops))
                out.extend(self._completion(index, ids, new, lp, stops)
                           for (index, ids), new, lp in zip(chunk, tokens, logprobs))
                if self.on_batch is not None:
                    self.on_batch(len(out), len(rows))
        return out

    def encode_prompt(self, prompt: str) -> list[int]:
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id] + ids
        return ids

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _generation_config(self, params: SamplingParams) -> GenerationConfig:
        # Every knob that changes the distribution is set here, so a checkpoint's own
        # generation_config.json (top_k=20, repetition_penalty=1.05, ...) cannot leak in.
        # Greedy leaves the sampling-only fields unset: generate ignores them then.
        sampling = {"temperature": params.temperature, "top_p": params.top_p, "top_k": 0, "min_p": None}
        return GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            min_new_tokens=0,
            do_sample=params.temperature > 0,
            **(sampling if params.temperature > 0 else {}),
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            num_beams=1,
            num_return_sequences=1,
            use_cache=True,
            eos_token_id=list(self.eos_ids),
            pad_token_id=self.pad_id,
        )

    def _decode_chunk(self, chunk: list[tuple[int, list[int]]], params: SamplingParams,
                      stops: tuple[str, ...]) -> tuple[list[list[int]], list[list[float]]]:
        """The new tokens of each row (through its eos, up to the stop string, or
        max_new_tokens) and their log-probs under the distribution they were drawn from."""
        stop_check = _StopOnStrings(self.tokenizer, stops).finished if stops else None
        return decode(self.model, [ids for _, ids in chunk], max_new_tokens=params.max_new_tokens,
                      temperature=params.temperature, top_p=params.top_p, eos_ids=self.eos_ids,
                      pad_id=self.pad_id, rows_finished=stop_check, with_logprobs=True)

    def _generate_chunk(self, chunk: list[tuple[int, list[int]]], config: GenerationConfig,
                        stops: tuple[str, ...]) -> tuple[list[list[int]], list[list[float]]]:
        """The same with `model.generate`: finished rows are padded to the longest one (the
        padding after eos or a stop string is cut by `_completion`). Its scores are the
        logits after temperature and top-p (-inf outside the nucleus), so their log-softmax is
        the distribution each token was drawn from."""
        device = self._device()
        width = max(len(ids) for _, ids in chunk)
        input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (_, ids) in enumerate(chunk):
            if ids:  # left padding: the prompt ends where generation starts
                input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                attention[row, width - len(ids):] = 1
        criteria = StoppingCriteriaList([_StopOnStrings(self.tokenizer, stops, width)]) if stops else None
        out = self.model.generate(
            input_ids=input_ids.to(device), attention_mask=attention.to(device),
            generation_config=config, stopping_criteria=criteria, output_scores=True, return_dict_in_generate=True,
        )
        tokens = out.sequences[:, width:]
        if not config.do_sample:  # greedy: a point mass
            return tokens.tolist(), torch.zeros(tokens.shape).tolist()
        logprobs = torch.stack([torch.log_softmax(step.float(), dim=-1).gather(1, tokens[:, t, None]).squeeze(1)
                                for t, step in enumerate(out.scores)], dim=1)
        return tokens.tolist(), logprobs.tolist()

    def _completion(self, prompt_index: int, prompt_ids: list[int], tokens: list[int], logprobs: list[float],
                    stops: tuple[str, ...]) -> Completion:
        eos_at = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
        if eos_at is not None:
            # Keep the eos: training must learn to stop. Its text is not part of the answer.
            ids = tokens[:eos_at + 1]
            text_ids, reason = ids[:-1], "stop"
        else:
            # No eos: the row ran the full max_new_tokens (or a stop string ended it early,
            # and the cut below drops the padding that followed).
            ids = tokens
            text_ids, reason = ids, "length"
        text = self._decode(text_ids)
        cut = _first_stop(text, stops)
        if cut is not None:
            text = text[:cut]
            ids = ids[:self._tokens_covering(text_ids, cut, stops)]
            reason = "stop"
        return Completion(prompt_index=prompt_index, text=text, prompt_ids=list(prompt_ids),
                          completion_ids=ids, logprobs=logprobs[:len(ids)], finish_reason=reason)

    def _tokens_covering(self, ids: list[int], cut: int, stops: tuple[str, ...]) -> int:
        """The fewest leading tokens whose text already holds the first stop string (ending at `cut`)."""
        lo, hi = 1, len(ids)
        while lo < hi:  # text of a prefix grows with the prefix, so bisect
            mid = (lo + hi) // 2
            found = _first_stop(self._decode(ids[:mid]), stops)
            if found is not None and found <= cut:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _decode(self, ids: list[int]) -> str:
        # Special tokens are kept: <think> may be one in a reasoning tokenizer, and the
        # format reward must see it. eos and padding are cut before this is called.
        return self.tokenizer.decode(ids, skip_special_tokens=False)


class _StopOnStrings(StoppingCriteria):
    """Ends a row as soon as the tail of its completion holds a stop string (saves the
    remaining steps; the authoritative cut is made on the full text afterwards)."""

    def __init__(self, tokenizer: Any, stops: tuple[str, ...], prompt_width: int = 0) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_width = prompt_width
        # A string of b bytes spans at most b tokens, plus one it may start inside.
        self.window = max(len(s.encode("utf-8")) for s in stops) + 2

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        tails = input_ids[:, max(self.prompt_width, input_ids.shape[1] - self.window):].tolist()
        return torch.tensor(self.finished(tails), dtype=torch.bool, device=input_ids.device)

    def finished(self, completions: list[list[int]]) -> list[bool]:
        """For each row's new tokens: does the text of their tail hold a stop string?"""
        texts = self.tokenizer.batch_decode([ids[-self.window:] for ids in completions], skip_special_tokens=False)
        return [_first_stop(t, self.stops) is not None for t in texts]


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the text is cut: the end of the earliest stop string in it (the stop string is
    kept, so `</answer>` stays visible to the format reward), or None."""
    best = None
    for stop in stops:
        at = text.find(stop)
        if at >= 0:
            end = at + len(stop)
            if best is None or at < best[0] or (at == best[0] and end < best[1]):
                best = (at, end)
    return None if best is None else best[1]


def _eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """The model's eos ids (a list for chat models, e.g. Qwen's <|im_end|> and <|endoftext|>)
    plus the tokenizer's, in that order."""
    ids: list[int] = []
    config = getattr(model, "generation_config", None)
    model_eos = getattr(config, "eos_token_id", None)
    for value in ([model_eos] if isinstance(model_eos, int) else list(model_eos or [])) + [tokenizer.eos_token_id]:
        if value is not None and value not in ids:
            ids.append(int(value))
    return tuple(ids)


def default_bos(tokenizer: Any) -> int | None:
    """The bos id if this tokenizer puts bos in front of text by default, else None."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    ids = tokenizer("a")["input_ids"]
    return bos if ids and ids[0] == bos else None


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Dropout off while sampling; the caller's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """With a seed, sampling is reproducible and the caller's RNG stream is left untouched;
    without one, sampling draws from (and advances) the global RNG."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
