"""Getting a model ready to train: load, LoRA (peft), gradient checkpointing, reference,
optimiser and schedule, and saving the result as a plain Hugging Face checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from thinkrl.models import load_model, load_tokenizer
from thinkrl.train.config import AdamWConfig, LoraConfig, ModelConfig


@dataclass
class Policy:
    model: Any
    tokenizer: Any
    reference: Any | None  # None when beta=0, or with LoRA (the reference is the adapter-disabled base)


def make_accelerator(cfg: ModelConfig) -> Any:
    """An Accelerator whose mixed precision follows `cfg.dtype` (bf16/fp16 autocast over fp32
    weights; float32 leaves the launch's choice). The scheduler is stepped by hand, once per
    optimiser step (accelerate would step it once per process). accelerate keeps one
    process-wide state and refuses a second Accelerator with another precision, yet one
    process runs a pipeline's stages one after another: the per-run part is reset, the
    process group (PartialState) is kept."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    precision = {"bfloat16": "bf16", "float16": "fp16"}.get(cfg.dtype)
    return Accelerator(step_scheduler_with_optimizer=False, mixed_precision=precision)


def load_policy(cfg: ModelConfig, need_reference: bool) -> Policy:
    """The policy to train, its tokenizer and (when needed) a frozen reference. Trained weights
    are float32 whatever `cfg.dtype` says: AdamW on bf16 weights rounds away updates smaller
    than half a bf16 step (most of them at RL learning rates); autocast gives the half-precision
    compute. A LoRA base is frozen, so it stays in `cfg.dtype` (peft keeps adapters in fp32)."""
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.name)
    model = load_model(cfg.name, dtype=cfg.dtype if cfg.lora.enabled else "float32")
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = True  # generation still wants the KV cache
    reference = None
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora)
    elif need_reference:
        reference = load_model(cfg.name, dtype=cfg.dtype).eval()
        reference.requires_grad_(False)
    model.train()
    return Policy(model=model, tokenizer=tokenizer, reference=reference)


def apply_lora(model, cfg: LoraConfig):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                              target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, peft_cfg)


def build_optimizer(model, cfg: AdamWConfig, total_updates: int):
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[cfg.schedule]
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=max(total_updates, 1))
    return optimizer, scheduler


def save_final_model(model, tokenizer, out_dir: Path, state_dict: dict | None = None) -> Path:
    """The trained policy as an ordinary checkpoint: LoRA adapters are merged so the folder
    loads with AutoModelForCausalLM (and vLLM) like any other. `state_dict`: the whole
    weights, when the model itself holds only a shard (FSDP)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if hasattr(model, "merge_and_unload"):
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
