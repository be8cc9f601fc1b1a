"""The SFT loop on accelerate: cold start, SFT on rejection-sampled data, distillation.

Read `train_sft` top to bottom: load the model and the rows, plan the steps, then the
usual accelerate loop (accumulate -> backward -> clip -> step), with checkpoints, metrics
and the final model from the same helpers GRPO uses. Runs as one process or under
`accelerate launch`, with DDP or FSDP2 (`thinkrl.train.saving` gathers the shards for
every checkpoint).

The loss is the mean over the response tokens of the whole optimiser step, on every
process together: each micro-batch contributes its token-loss sum divided by the step's
token count, so long and short micro-batches weigh by their tokens, not equally.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from thinkrl.errors import ConfigError
from thinkrl.processes import main_process_only
from thinkrl.train.checkpoint import resume_checkpoint
from thinkrl.train.distributed import check_launch
from thinkrl.train.interrupts import StopSignals, interrupted
from thinkrl.train.model_setup import build_optimizer, load_policy, make_accelerator
from thinkrl.train.progress import StepProgress, end_line, say, start_line
from thinkrl.train.run_folder import prepare_run_folder
from thinkrl.train.saving import restore, restore_sharded_optimizer, save_final, save_step
from thinkrl.train.sft_config import SFTConfig
from thinkrl.train.sft_data import IGNORE, SFTData, SFTDataReport, TokenizedExample, collate, load_sft_data
from thinkrl.train.sft_plan import FILLER, StepPlan, deal_micro_batches, plan_steps
from thinkrl.train.sharding import is_sharded, unsharded
from thinkrl.train.tracking import MetricsTracker

log = logging.getLogger(__name__)

SFT_WATCHED = (("loss", "loss"), ("eval_loss", "eval"), ("lr", "lr"), ("tokens_per_s", "tok/s"))


@dataclass
class SFTResult:
    run_dir: Path
    final_model_dir: Path
    steps_done: int
    last_metrics: dict
    data: SFTDataReport


def train_sft(cfg: SFTConfig, on_step: Callable[[int, dict], None] | None = None) -> SFTResult:
    """Fine-tune `cfg.model` on `cfg.data`; `on_step(step, metrics)` runs after each step
    (and its checkpoint), on every process."""
    from accelerate.utils import set_seed

    if cfg.run.torch_threads:
        torch.set_num_threads(cfg.run.torch_threads)
    accelerator = make_accelerator(cfg.model)
    processes = accelerator.num_processes
    accum = micro_batches_per_step(cfg, processes)
    accelerator.gradient_accumulation_steps = accum
    check_launch(accelerator, lora=cfg.model.lora.enabled)
    main, sharded = accelerator.is_main_process, is_sharded(accelerator)
    run_dir = Path(cfg.run.output_dir)
    main_process_only(lambda: prepare_run_folder(cfg, run_dir, "sft"))
    set_seed(cfg.run.seed)

    policy = load_policy(cfg.model, need_reference=False)
    model, tokenizer = policy.model, policy.tokenizer
    data = load_sft_data(cfg.data, tokenizer, cfg.run.seed, model_config=model.config)
    plan = plan_steps(len(data.units), cfg.run.batch_size, cfg.run.seed, cfg.run.epochs, cfg.run.max_steps)
    total_steps = len(plan.steps)
    if main:
        log.info("%s", data.report.summary())
        (run_dir / "data_report.json").write_text(json.dumps(asdict(data.report), indent=2) + "\n")
    optimizer, scheduler = build_optimizer(model, cfg.optim, total_updates=total_steps)

    checkpoint = resume_checkpoint(run_dir) if cfg.resume else None
    start_step = _resume(accelerator, checkpoint, model, optimizer, scheduler, plan_key(data, cfg)) if checkpoint else 0
    model, optimizer = accelerator.prepare(model, optimizer)
    restore_sharded_optimizer(accelerator, checkpoint, model, optimizer.optimizer)
    loader = accelerator.prepare(_loader(data, plan, start_step, processes, cfg, tokenizer.pad_token_id))
    step_tokens = [_count(data, rows) for rows in plan.steps]

    tracker = None
    if main:
        tracker = MetricsTracker(run_dir, cfg.run.trackers, resume_step=start_step if cfg.resume else None,
                                 config=cfg.model_dump(mode="json"))
    metrics: dict[str, Any] = {}
    step = start_step
    loss_sum = torch.zeros((), device=accelerator.device)
    started = t0 = time.perf_counter()
    model.train()
    sources = ", ".join([cfg.data.path, *cfg.data.extra_paths])
    say(start_line("SFT", run_dir, cfg.model.name, f"{sources} ({len(data.train)} examples)", start_step, checkpoint), main)
    with _progress(main, total_steps, start_step) as progress, StopSignals(accelerator) as stop:
        for batch in loader:
            loss_tokens, _ = step_tokens[step]
            with accelerator.accumulate(model):
                token_loss = token_loss_sum(model, batch)
                # accelerate divides by the accumulation count and DDP averages over
                # processes; both are undone so the gradient is d(sum / step tokens).
                accelerator.backward(token_loss * (processes * accum / max(loss_tokens, 1)))
                loss_sum += token_loss.detach()
            if not accelerator.sync_gradients:
                continue
            step += 1
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss = float(accelerator.reduce(loss_sum, reduction="sum")) / max(loss_tokens, 1)
            loss_sum.zero_()
            elapsed, t0 = time.perf_counter() - t0, time.perf_counter()
            metrics = {"loss": loss, "lr": lr, "grad_norm": float(grad_norm), "loss_tokens": loss_tokens,
                       "tokens": step_tokens[step - 1][1], "tokens_per_s": step_tokens[step - 1][1] / elapsed,
                       "epoch": plan.epoch(step)}
            eval_due = step == total_steps or (cfg.run.eval_every and step % cfg.run.eval_every == 0)
            # Under FSDP every process evaluates, on unsharded weights: FSDP2 records each forward
            # pass to plan the next backward's prefetches, and a main-only evaluation left the
            # processes with different plans (a collective mismatch at the next step).
            if data.eval and eval_due and (main or sharded):
                with unsharded(accelerator, model):
                    metrics["eval_loss"] = eval_loss(accelerator.unwrap_model(model), data.eval,
                                                     cfg.run.micro_batch_size, tokenizer.pad_token_id)
            if main:
                tracker.log(step, metrics)
                progress.advance(metrics)
            stopping = step < total_steps and stop.requested()
            if (cfg.run.save_every and step % cfg.run.save_every == 0) or step == total_steps or stopping:
                save_step(accelerator, run_dir, step, model, tokenizer, optimizer.optimizer, scheduler,
                          extra_state={"epoch": plan.epoch(step), "plan": plan_key(data, cfg)},
                          keep_last=cfg.run.keep_checkpoints)
            if on_step is not None:
                on_step(step, metrics)
            if stopping:
                break
            t0 = time.perf_counter()
    if stop.signum and step < total_steps:
        if main:
            tracker.close()
        raise interrupted(stop.signum, step, run_dir, "sft")

    final_dir = save_final(accelerator, run_dir, model, tokenizer)
    if main:
        tracker.close()
        if cfg.run.plot:
            from thinkrl.train.plots import SFT_PANELS, plot_metrics

            plot_metrics(tracker.metrics_path, run_dir / "plots", panels=SFT_PANELS)
    accelerator.wait_for_everyone()
    say(end_line("SFT", step, final_dir, progress.headline(), time.perf_counter() - started), main)
    return SFTResult(run_dir=run_dir, final_model_dir=final_dir, steps_done=step, last_metrics=metrics,
                     data=data.report)


def micro_batches_per_step(cfg: SFTConfig, processes: int) -> int:
    """Gradient accumulation steps: the global batch over processes x micro-batch."""
    per_step = processes * cfg.run.micro_batch_size
    if cfg.run.batch_size % per_step:
        raise ConfigError(f"run.batch_size={cfg.run.batch_size} must be a multiple of run.micro_batch_size x "
                          f"processes = {cfg.run.micro_batch_size} x {processes}")
    return cfg.run.batch_size // per_step


def token_loss_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over the labelled tokens of `batch`."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    # use_cache=False matters beyond memory: with a cache, transformers ignores the
    # position_ids that mark packed examples and lets them attend to each other.
    logits = model(**inputs, use_cache=False).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")


@torch.no_grad()
def eval_loss(model, examples: list[TokenizedExample], micro_batch_size: int, pad_id: int) -> float:
    """Mean loss per response token over `examples` (unpacked)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for start in range(0, len(examples), micro_batch_size):
        part = examples[start:start + micro_batch_size]
        batch = {k: v.to(device) for k, v in collate([[ex] for ex in part], pad_id, packed=False).items()}
        total += float(token_loss_sum(model, batch))
        tokens += sum(ex.loss_tokens for ex in part)
    model.train(was_training)
    return total / max(tokens, 1)


def plan_key(data: SFTData, cfg: SFTConfig) -> str:
    """What fixes the step -> rows mapping; a resume under another key cannot find its place."""
    return f"rows={len(data.units)} batch={cfg.run.batch_size} seed={cfg.run.seed} packing={cfg.data.packing}"


# ---------------------------------------------------------------- helpers


class _Rows(torch.utils.data.Dataset):
    """Row i of the plan: the examples it packs (a FILLER index holds none)."""

    def __init__(self, data: SFTData) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data.units)

    def __getitem__(self, index: int) -> list[TokenizedExample]:
        if index == FILLER:
            return []
        return [self.data.train[i] for i in self.data.units[index]]


def _loader(data: SFTData, plan: StepPlan, start_step: int, processes: int, cfg: SFTConfig, pad_id: int):
    """A DataLoader over the plan's micro-batches from `start_step` on (a resumed run starts
    at its data position); accelerate deals them out to the processes."""
    batches = deal_micro_batches(plan.steps[start_step:], processes, cfg.run.micro_batch_size, cfg.run.batch_size)
    packed = cfg.data.packing
    return torch.utils.data.DataLoader(_Rows(data), batch_sampler=batches,
                                       collate_fn=lambda rows: collate(rows, pad_id, packed))


def _count(data: SFTData, rows: list[int]) -> tuple[int, int]:
    """(response tokens, all tokens) of a step's rows."""
    examples = [data.train[i] for row in rows for i in data.units[row]]
    return sum(ex.loss_tokens for ex in examples), sum(len(ex.input_ids) for ex in examples)


def _resume(accelerator, checkpoint: Path, model, optimizer, scheduler, key: str) -> int:
    state = restore(accelerator, checkpoint, model, optimizer, scheduler)
    if state.get("plan") != key:
        log.warning("resume: the data or batch settings changed since %s (%s, now %s); the data order "
                    "from here on is the new one's", checkpoint, state.get("plan"), key)
    return int(state["step"])


def _progress(main: bool, total: int, done: int) -> StepProgress:
    return StepProgress(total, done, "SFT", watched=SFT_WATCHED, enabled=main)
