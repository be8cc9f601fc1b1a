"""Where the training loops (GRPO, SFT) meet the disk: resuming, step checkpoints and the
final model, the same for one process, DDP and FSDP. Every process calls these (under FSDP
the states are gathered from all of them); the main process alone writes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from thinkrl.train.checkpoint import load_checkpoint, load_optimizer_state, save_checkpoint
from thinkrl.train.model_setup import save_final_model
from thinkrl.train.sharding import full_states, is_sharded, load_sharded_optimizer

log = logging.getLogger(__name__)


def restore(accelerator, checkpoint: Path, model, optimizer, scheduler) -> dict[str, Any]:
    """Before `accelerator.prepare`: the weights, scheduler and random streams, and the
    optimizer unless FSDP will shard it (`restore_sharded_optimizer` then, after prepare).
    Returns the checkpoint's trainer_state.json."""
    state = load_checkpoint(checkpoint, model, None if is_sharded(accelerator) else optimizer, scheduler)
    log.info("resumed from %s (step %d)", checkpoint, state["step"])
    return state


def restore_sharded_optimizer(accelerator, checkpoint: Path | None, model, optimizer) -> None:
    """After `accelerator.prepare`, under FSDP: each process takes its shard of the saved state."""
    if checkpoint is not None and is_sharded(accelerator):
        load_sharded_optimizer(model, optimizer, load_optimizer_state(checkpoint))


def save_step(accelerator, run_dir: Path, step: int, model, tokenizer, optimizer, scheduler,
              extra_state: dict[str, Any], keep_last: int) -> None:
    """The checkpoint for `step` (whole states, written atomically by the main process)."""
    model_state, optimizer_state = full_states(accelerator, model, optimizer)
    if accelerator.is_main_process:
        save_checkpoint(run_dir, step, accelerator.unwrap_model(model), tokenizer, optimizer, scheduler,
                        extra_state=extra_state, keep_last=keep_last, model_state=model_state,
                        optimizer_state=optimizer_state)
    accelerator.wait_for_everyone()


def save_final(accelerator, run_dir: Path, model, tokenizer) -> Path:
    """The trained model as an ordinary Hugging Face folder, `run_dir/final`."""
    final_dir = Path(run_dir) / "final"
    model_state, _ = full_states(accelerator, model)
    if accelerator.is_main_process:
        save_final_model(accelerator.unwrap_model(model), tokenizer, final_dir, state_dict=model_state)
    accelerator.wait_for_everyone()
    return final_dir
