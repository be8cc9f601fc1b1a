"""Building, pretraining and caching the tiny default model (`thinkrl/tiny`).

The result is an ordinary Hugging Face checkpoint folder (config.json, model.safetensors,
tokenizer files, gate.json). It is built once per seed into a temporary folder and
renamed into place, under a lock file, so a killed build never leaves a half checkpoint
and two processes never build the same one at the same time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from transformers import LlamaConfig, LlamaForCausalLM

from thinkrl.data.tasks import Task, get_task
from thinkrl.files import cache_root
from thinkrl.tiny.config import TinyConfig
from thinkrl.tiny.corpus import CorpusMix, corpus_texts
from thinkrl.tiny.gate import GateReport, evaluate_gate
from thinkrl.tiny.tokenizer import build_tokenizer

VERSION = 2
"""Bumped whenever the recipe changes, so stale cached checkpoints are rebuilt."""

_TRAINING_FIELDS = set(TinyConfig.model_fields) - {"output_dir", "force"}

StepCallback = Callable[[int, int, float], None]  # (done, total, loss)


def checkpoint_dir(cfg: TinyConfig) -> Path:
    """Where `cfg`'s checkpoint lives: `output_dir`, else a cache folder named by seed and
    version (plus a hash of the settings when they differ from the defaults)."""
    if cfg.output_dir:
        return Path(cfg.output_dir).expanduser()
    name = f"tiny-seed{cfg.seed}-v{VERSION}"
    changed = {k: v for k, v in cfg.model_dump(include=_TRAINING_FIELDS).items()
               if k != "seed" and v != TinyConfig.model_fields[k].default}
    if changed:
        name += "-" + hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
    return cache_root() / name


def is_built(folder: Path) -> bool:
    """A finished build: gate.json is written last, inside the temporary folder."""
    return all((folder / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json", "gate.json"))


def ensure_tiny(seed: int = 0) -> Path:
    """The cached default tiny checkpoint for `seed`, built on first use."""
    folder = checkpoint_dir(TinyConfig(seed=seed))
    if is_built(folder):
        return folder
    Console(stderr=True).print(f"building the tiny default model (seed {seed}) into {folder}, once (a few minutes)")
    return build_tiny(TinyConfig(seed=seed), progress=True)[0]


def run_tiny(cfg: TinyConfig) -> Path:
    """`thinkrl tiny`: build (unless already built), then print the gate report and the path."""
    console = Console()
    folder, report, seconds = build_tiny(cfg, progress=True)
    if seconds is None:
        console.print(f"already built (use --set force=true to rebuild): {folder}")
    else:
        console.print(f"built in {seconds:.0f} s")
    for line in report.lines():
        console.print(line, highlight=False)
    console.print(f"checkpoint: {folder}", highlight=False)
    return folder


def build_tiny(cfg: TinyConfig, progress: bool = False) -> tuple[Path, GateReport, float | None]:
    """(folder, gate report, build seconds or None when it was already built)."""
    folder = checkpoint_dir(cfg)
    if is_built(folder) and not cfg.force:
        return folder, _read_report(folder), None
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _lock(folder):
        if is_built(folder) and not cfg.force:  # another process built it while we waited
            return folder, _read_report(folder), None
        for stale in folder.parent.glob(f".{folder.name}.tmp-*"):  # left by killed builds
            shutil.rmtree(stale, ignore_errors=True)
        tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
        start = time.perf_counter()
        try:
            report = _build_into(cfg, tmp, progress)
            _replace_dir(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder, report, time.perf_counter() - start


def _build_into(cfg: TinyConfig, folder: Path, progress: bool) -> GateReport:
    torch.manual_seed(cfg.seed)
    tokenizer = build_tokenizer()
    model = LlamaForCausalLM(_model_config(cfg, tokenizer))
    task = get_task(cfg.task)
    mix = CorpusMix(direct=cfg.direct_share, noisy_think=cfg.noisy_share, direct_correct=cfg.direct_correct)
    with _progress_bar(progress, cfg.steps) as on_step:  # grows when an extra round starts
        pretrain(model, tokenizer, pretraining_corpus(task, cfg, mix), cfg.batch_size, cfg.lr, cfg.warmup_steps, on_step)
        report = _gate(model, tokenizer, cfg)
        for round_ in range(1, cfg.extra_rounds + 1):
            if report.passed:
                break
            # A fresh, gentler warmup-cosine cycle on new problems: more of the same until it holds.
            texts = corpus_texts(task, cfg.extra_steps * cfg.batch_size, _corpus_seed(cfg, round_), mix)
            pretrain(model, tokenizer, texts, cfg.batch_size, cfg.lr / 3, cfg.warmup_steps // 3, on_step)
            report = _gate(model, tokenizer, cfg)
    folder.mkdir(parents=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    (folder / "tiny.json").write_text(json.dumps({"version": VERSION, **cfg.model_dump(include=_TRAINING_FIELDS)},
                                                 indent=2) + "\n")
    report.save(folder / "gate.json")  # last: its presence marks a finished build
    return report


def pretraining_corpus(task: Task, cfg: TinyConfig, mix: CorpusMix) -> list[tuple[str, str]]:
    """Two phases in order: first mostly scratchpads (the arithmetic is learnt where it is
    written out), then the base mix, which sets how often the model thinks by itself. Without
    the first phase a 0.5M model learnt the steps too slowly (forced accuracy 0.05-0.3)."""
    skill_steps = round(cfg.steps * cfg.skill_phase)
    skill_mix = replace(mix, direct=cfg.skill_direct_share)
    return (corpus_texts(task, skill_steps * cfg.batch_size, _corpus_seed(cfg, 0), skill_mix)
            + corpus_texts(task, (cfg.steps - skill_steps) * cfg.batch_size, _corpus_seed(cfg, 100), mix))


def pretrain(model: LlamaForCausalLM, tokenizer, texts: list[tuple[str, str]], batch_size: int, lr: float,
             warmup_steps: int, on_step: StepCallback | None = None) -> float:
    """Next-token training on the completions (the prompt is context only); returns the last loss."""
    steps = len(texts) // batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, warmup_steps, steps))
    prompts = tokenizer([p for p, _ in texts])["input_ids"]
    completions = tokenizer([c for _, c in texts], add_special_tokens=False)["input_ids"]
    model.train()
    loss_value = float("nan")
    for step in range(steps):
        # Corpus order, not length buckets: buckets split batches by style (short direct
        # answers vs long scratchpads), and the last few batches then skew the think rate.
        rows = range(step * batch_size, (step + 1) * batch_size)
        input_ids, labels, mask = _batch([prompts[i] for i in rows], [completions[i] for i in rows],
                                         tokenizer.pad_token_id, tokenizer.eos_token_id)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        loss_value = loss.item()
        if on_step is not None:
            on_step(step + 1, steps, loss_value)
    return loss_value


def _batch(prompts: list[list[int]], completions: list[list[int]], pad_id: int,
           eos_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, labels (-100 on prompt and padding) and attention mask."""
    seqs = [p + c + [eos_id] for p, c in zip(prompts, completions)]
    width = max(map(len, seqs))
    input_ids = torch.full((len(seqs), width), pad_id)
    labels = torch.full((len(seqs), width), -100)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, (prompt, seq) in enumerate(zip(prompts, seqs)):
        input_ids[row, :len(seq)] = torch.tensor(seq)
        labels[row, len(prompt):len(seq)] = torch.tensor(seq[len(prompt):])
        mask[row, :len(seq)] = 1
    return input_ids, labels, mask


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _model_config(cfg: TinyConfig, tokenizer) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=256, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def _gate(model: LlamaForCausalLM, tokenizer, cfg: TinyConfig) -> GateReport:
    report = evaluate_gate(model, tokenizer, get_task(cfg.task), problems=cfg.gate_problems,
                           samples=cfg.gate_samples, temperature=cfg.gate_temperature, seed=cfg.seed)
    report.passed = (report.forced_think_accuracy >= cfg.min_forced_accuracy
                     and report.greedy_accuracy <= cfg.max_greedy_accuracy)
    return report


def _corpus_seed(cfg: TinyConfig, round_: int) -> int:
    # Far from the held-out seed 1234 (which draws from a separate split anyway).
    return 100_000 + 1_000 * cfg.seed + round_


def _read_report(folder: Path) -> GateReport:
    return GateReport(**json.loads((folder / "gate.json").read_text()))


def _replace_dir(new: Path, target: Path) -> None:
    """Move `new` to `target`, replacing an older build only once the new one is complete."""
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _lock(folder: Path) -> Iterator[None]:
    with open(folder.parent / f"{folder.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, even if we are killed
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _progress_bar(show: bool, total: int) -> Iterator[StepCallback]:
    if not show:
        yield lambda done, steps, loss: None
        return
    columns = (TextColumn("[bold]tiny"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("pretrain", total=total, info="")

        def on_step(done: int, steps: int, loss: float) -> None:
            state = bar.tasks[0]
            if done == 1 and state.completed >= (state.total or 0):  # an extra round begins
                bar.update(task, total=state.completed + steps)
            bar.update(task, advance=1, info=f"loss {loss:.3f}")

        yield on_step
