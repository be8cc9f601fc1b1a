"""SFT rows to training tensors: read rows, tokenise them with a loss mask, pack, collate.

A row is either `prompt` + `response` or a chat (`messages`). Labels are -100 wherever
the model is not taught: the prompt, user and system turns, padding. The loss covers the
response and the eos after it, so the model learns to stop. Prompts are tokenised the
way the rollout engine tokenises them at generation time (no special tokens, bos only
where the tokenizer uses one), so training sees exactly the ids sampling will see.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from thinkrl.data.context import model_positions
from thinkrl.data.example import Example
from thinkrl.data.loaders import announce, source_rows
from thinkrl.data.presets import RowError
from thinkrl.data.templates import render_prompt
from thinkrl.errors import ConfigError, DataError
from thinkrl.rollout.transformers_engine import default_bos
from thinkrl.train.sft_config import SFTDataConfig

log = logging.getLogger(__name__)

IGNORE = -100  # label of a token that carries no loss (what torch's cross_entropy skips)


@dataclass
class SFTRow:
    """One training row after its fields are picked out: a prompt/response pair or a chat."""

    where: str  # file:line (or file, row N) for error messages
    prompt: str | None = None
    response: str | None = None
    messages: list[dict[str, str]] | None = None
    source: str = ""  # which split of which source the row is from, as the data line says it


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE where there is no loss
    truncated: bool = False
    full_length: int = 0  # tokens before truncation

    @property
    def loss_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


@dataclass
class SFTDataReport:
    """What loading did, for the log and the run folder: truncation is never silent."""

    source: str
    rows: int = 0
    train_examples: int = 0
    eval_examples: int = 0
    truncated: int = 0  # cut to max_length, kept (data.on_long_row=truncate)
    dropped: int = 0  # no response token left within max_length
    skipped: int = 0  # longer than max_length, left out (data.on_long_row=skip)
    longest: int = 0  # tokens of the longest example before any cut
    packed_rows: int | None = None  # with packing: rows the train examples were packed into

    def summary(self) -> str:
        text = f"{self.source}: {self.rows} rows -> {self.train_examples} train, {self.eval_examples} eval examples"
        if self.packed_rows is not None:
            text += f", packed into {self.packed_rows} rows"
        if self.truncated or self.dropped:
            text += f"; {self.truncated} truncated to max_length, {self.dropped} dropped (prompt fills max_length)"
        if self.skipped:
            text += f"; {self.skipped} skipped as longer than max_length (longest {self.longest} tokens)"
        return text


@dataclass
class SFTData:
    train: list[TokenizedExample]
    eval: list[TokenizedExample]
    report: SFTDataReport
    units: list[list[int]] = field(default_factory=list)  # train rows as lists of example indices


def load_sft_data(cfg: SFTDataConfig, tokenizer: Any, seed: int, model_config: Any = None) -> SFTData:
    """Tokenised train and eval examples, and the train rows (packed when cfg says).

    An example longer than data.max_length is truncated, skipped or an error as
    data.on_long_row says, counted either way; max_length itself may not exceed the
    positions of the model `model_config` describes, so no row ever runs past them."""
    max_positions = model_positions(model_config, tokenizer) if model_config is not None else None
    if max_positions is not None and cfg.max_length > max_positions:
        raise ConfigError(f"data.max_length={cfg.max_length} is over the model's {max_positions} positions; "
                          f"set data.max_length to {max_positions} or less")
    report = SFTDataReport(cfg.path)
    examples: list[TokenizedExample] = []
    too_long: list[int] = []
    per_source: Counter[str] = Counter()
    for row in read_sft_rows(cfg):
        report.rows += 1
        per_source[row.source] += 1
        example = tokenize_row(row, cfg, tokenizer)
        report.longest = max(report.longest, example.full_length)
        if example.truncated:
            too_long.append(example.full_length)
            if cfg.on_long_row != "truncate":
                report.skipped += 1
                continue
        if example.loss_tokens == 0:
            report.dropped += 1
            continue
        report.truncated += example.truncated
        examples.append(example)
    for source, count in per_source.items():
        announce(f"data: {count} rows {source}")
    if too_long and cfg.on_long_row == "error":
        raise ConfigError(f"{cfg.path}: {len(too_long)} of {report.rows} examples are longer than data.max_length="
                          f"{cfg.max_length} tokens (longest {max(too_long)}); set data.on_long_row=truncate or skip, "
                          "or raise data.max_length")
    if not examples:
        raise DataError(f"{cfg.path}: no example keeps a response token within data.max_length={cfg.max_length}")
    train, eval_ = split_eval(examples, cfg.eval_fraction, seed)
    report.train_examples, report.eval_examples = len(train), len(eval_)
    if cfg.packing:
        units = pack_examples([len(ex.input_ids) for ex in train], cfg.max_length, seed)
        report.packed_rows = len(units)
    else:
        units = [[i] for i in range(len(train))]
    if report.truncated or report.dropped or report.skipped:
        log.warning("%s", report.summary())
    return SFTData(train=train, eval=eval_, report=report, units=units)


# ---------------------------------------------------------------- reading rows


def read_sft_rows(cfg: SFTDataConfig) -> Iterator[SFTRow]:
    """The rows of `cfg.path` then of each of `cfg.extra_paths`, at most `cfg.limit` in all;
    a malformed row stops with FILE:LINE."""
    count = 0
    for path in [cfg.path, *cfg.extra_paths]:
        if path.startswith("task:"):
            rows = _task_rows(cfg.model_copy(update={"path": path}))
        else:
            source = source_rows(path, cfg.split)
            label = (f"of the {source.split} split " if source.split else "") + source.origin
            rows = (_pick_fields(where, row, cfg, label) for where, row in source.rows)
        for row in rows:
            if cfg.limit is not None and count >= cfg.limit:
                return
            count += 1
            yield row


def _pick_fields(where: str, row: Mapping[str, Any] | RowError, cfg: SFTDataConfig, source: str = "") -> SFTRow:
    if isinstance(row, RowError):
        raise DataError(f"{where}: {row}")
    if cfg.messages_field in row and row[cfg.messages_field] is not None:
        return SFTRow(where, messages=_checked_messages(where, row[cfg.messages_field], cfg.messages_field),
                      source=source)
    missing = [name for name in (cfg.prompt_field, cfg.response_field) if not isinstance(row.get(name), str)]
    if missing:
        has = ", ".join(sorted(row)) or "nothing"
        raise DataError(
            f"{where}: row needs string fields '{cfg.prompt_field}' and '{cfg.response_field}' or a "
            f"'{cfg.messages_field}' list (it has: {has}); set data.prompt_field / response_field / messages_field"
        )
    if not row[cfg.response_field].strip():
        raise DataError(f"{where}: empty '{cfg.response_field}': nothing to learn from this row")
    return SFTRow(where, prompt=row[cfg.prompt_field], response=row[cfg.response_field], source=source)


def _checked_messages(where: str, messages: Any, name: str) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: '{name}' must be a non-empty list of {{role, content}} objects")
    for i, message in enumerate(messages):
        if not (isinstance(message, Mapping) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise DataError(f"{where}: '{name}'[{i}] must be an object with string 'role' and 'content'")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: '{name}' has no assistant turn: nothing to learn from this row")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _task_rows(cfg: SFTDataConfig) -> Iterator[SFTRow]:
    """A synthetic task's problems answered by their correct scratchpad: cold-start style data."""
    from thinkrl.data.tasks import HELDOUT_SEED, get_task

    name = cfg.path.removeprefix("task:").strip()
    task = get_task(name)
    split = "held-out" if cfg.task_seed == HELDOUT_SEED else "training"
    source = f"of {cfg.path}'s {split} split (task_seed {cfg.task_seed})"
    for i, example in enumerate(task.generate(n=cfg.task_size, seed=cfg.task_seed), start=1):
        response = f"<think>{task.scratchpad(example)}</think><answer>{example.answer}</answer>"
        yield SFTRow(f"{cfg.path}, problem {i}", prompt=example.prompt, response=response, source=source)


# ---------------------------------------------------------------- tokenising


def tokenize_row(row: SFTRow, cfg: SFTDataConfig, tokenizer: Any) -> TokenizedExample:
    if row.messages is not None:
        messages = row.messages
        if cfg.system_prompt and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": cfg.system_prompt}] + messages
        return tokenize_messages(messages, tokenizer, cfg.max_length, where=row.where)
    template = cfg.template
    if template == "auto":
        template = "r1_zero_short" if cfg.path.startswith("task:") else "none"
    prompt = row.prompt
    if template != "none":
        prompt = render_prompt(Example(prompt=prompt, kind="general"), template, tokenizer, cfg.system_prompt)
    return tokenize_pair(prompt, row.response, tokenizer, cfg.max_length)


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Prompt ids as TransformersEngine.encode_prompt makes them, so training matches sampling."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = default_bos(tokenizer)
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    return ids


def tokenize_pair(prompt: str, response: str, tokenizer: Any, max_length: int) -> TokenizedExample:
    """Prompt and response tokenised apart (as at generation time), eos appended; loss on the
    response and eos only."""
    eos = _eos_id(tokenizer)
    prompt_ids = encode_prompt(tokenizer, prompt)
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if not response_ids or response_ids[-1] != eos:
        response_ids = response_ids + [eos]
    ids = prompt_ids + response_ids
    labels = [IGNORE] * len(prompt_ids) + list(response_ids)
    return _truncate(ids, labels, max_length)


def tokenize_messages(messages: list[dict[str, str]], tokenizer: Any, max_length: int,
                      where: str = "messages") -> TokenizedExample:
    """A chat through the tokenizer's chat template, loss on the assistant turns only.

    Each assistant turn's text is found by rendering the chat up to the turn (with the
    generation prompt) and through it: the difference is what the model writes there,
    its end-of-turn marker included. Tokens whose text starts inside such a span are
    trained on; this works for any template, with or without `{% generation %}` markers."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("chat rows (data.messages_field) need a tokenizer with a chat template; this one has none")

    def render(msgs: list[dict[str, str]], generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt)

    full = render(messages, False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(messages[:i], True) if i else _generation_prefix(render)
        through = render(messages[:i + 1], False)
        if not (through.startswith(before) and full.startswith(through)):
            raise DataError(f"{where}: the chat template renders earlier turns differently once later ones follow, "
                            "so the assistant turns cannot be located; give such rows as prompt + response")
        spans.append((len(before), len(through.rstrip())))  # the newline after an end marker is not the model's
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    labels = [token if any(start <= begin < end for start, end in spans) else IGNORE
              for token, (begin, _) in zip(ids, encoded["offset_mapping"])]
    bos = default_bos(tokenizer)
    if bos is not None and ids and ids[0] != bos:
        ids, labels = [bos] + ids, [IGNORE] + labels
    return _truncate(ids, labels, max_length)


def _generation_prefix(render) -> str:
    """What the template writes before a first-turn assistant message (no earlier turns)."""
    try:
        return render([], True)
    except Exception:  # noqa: BLE001 - some templates refuse an empty chat; then nothing precedes
        return ""


def _eos_id(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer names no eos token, so SFT cannot teach the model to stop")
    return int(tokenizer.eos_token_id)


def _truncate(ids: list[int], labels: list[int], max_length: int) -> TokenizedExample:
    # Nothing precedes the first token to predict it, so it never carries loss; saying so in
    # the labels keeps token counts right and stops a packed row predicting it from the
    # previous example.
    labels = [IGNORE] + labels[1:]
    if len(ids) <= max_length:
        return TokenizedExample(ids, labels, full_length=len(ids))
    return TokenizedExample(ids[:max_length], labels[:max_length], truncated=True, full_length=len(ids))


# ---------------------------------------------------------------- eval split, packing


def split_eval(examples: list[TokenizedExample], fraction: float, seed: int) -> tuple[list, list]:
    """A seeded random `fraction` of the examples held out (at least one when fraction > 0)."""
    if fraction <= 0:
        return examples, []
    if len(examples) < 2:
        raise DataError(f"data.eval_fraction={fraction} needs at least 2 examples, got {len(examples)}")
    n_eval = min(max(1, round(fraction * len(examples))), len(examples) - 1)
    held = set(random.Random(seed).sample(range(len(examples)), n_eval))
    return ([ex for i, ex in enumerate(examples) if i not in held],
            [ex for i, ex in enumerate(examples) if i in held])


def pack_examples(lengths: list[int], max_length: int, seed: int) -> list[list[int]]:
    """Example indices grouped into rows of at most `max_length` tokens: first fit over a
    seeded shuffle, so a row mixes unrelated examples and the packing is reproducible."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max_length - lengths[i])
    return rows


# ---------------------------------------------------------------- collation


def collate(rows: list[list[TokenizedExample]], pad_id: int, packed: bool) -> dict[str, torch.Tensor]:
    """Right-padded tensors for a micro-batch. Each row is the examples it holds (one, unless
    packed; none for a filler row that only keeps processes in step).

    Unpacked: input_ids, attention_mask, labels. Packed: input_ids, position_ids, labels and
    no attention_mask: position ids restarting at 0 make transformers build a block-diagonal
    causal mask, so no token sees another example (the first label of each example is
    always IGNORE, see `_truncate`, so no loss crosses a boundary either)."""
    sequences = []
    for examples in rows:
        ids, labels, positions = [], [], []
        for ex in examples:
            ids += ex.input_ids
            labels += ex.labels
            positions += range(len(ex.input_ids))
        if not ids:  # filler: one pad token without loss
            ids, labels, positions = [pad_id], [IGNORE], [0]
        sequences.append((ids, labels, positions))
    width = max(len(ids) for ids, _, _ in sequences)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    label_t = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    position_t = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (ids, labels, positions) in enumerate(sequences):
        n = len(ids)
        input_ids[r, :n] = torch.tensor(ids)
        label_t[r, :n] = torch.tensor(labels)
        attention[r, :n] = 1
        position_t[r, :n] = torch.tensor(positions)
        position_t[r, n:] = torch.arange(width - n)  # padding is a block of its own
    if packed:
        return {"input_ids": input_ids, "position_ids": position_t, "labels": label_t}
    return {"input_ids": input_ids, "attention_mask": attention, "labels": label_t}
