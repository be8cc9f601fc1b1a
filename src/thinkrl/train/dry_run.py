"""Dry run: will this GRPO run fit on these GPUs? Answered before any weight is downloaded.

The model is built on the meta device from its config.json alone (a local folder, the
Hugging Face cache, or an architecture bundled in train/architectures/ for the models
thinkrl ships configs for), so parameters are counted exactly, LoRA included, in seconds
even for 7B. GPU memory per device is then estimated term by term; the terms are
estimates (allocator overhead, fragmentation and CUDA context are not counted), meant to
pick a launch config and a micro batch, not to promise a byte count.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from thinkrl.errors import ConfigError, ModelNotFoundError

ARCHITECTURES = Path(__file__).with_name("architectures")
GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelShape:
    """The sizes the memory estimate needs, read from a config."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_rows: int  # rows of the embedding (often padded above the tokenizer's size)

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim


@dataclass(frozen=True)
class RunShape:
    """What the run asks of each GPU (everything except the model)."""

    dtype: str = "bfloat16"
    trainable_params: int = 0
    total_params: int = 0
    lora: bool = False
    gradient_checkpointing: bool = True
    micro_batch_size: int = 8
    seq_len: int = 1536
    rollout_samples: int = 512
    num_gpus: int = 1
    zero_stage: int = 0
    reference_model: bool = False
    vllm_memory_fraction: float = 0.0
    vllm_sleep: bool = True
    gpu_memory_gib: float = 80.0


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU. Training phase: forward/backward/step; generation phase: vLLM sampling
    while the policy and its optimizer states stay resident."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    reference: int
    vllm: int
    training_total: int
    generation_total: int
    kv_bytes_per_token: int
    vllm_kv_capacity: int  # what is left of vLLM's share after its copy of the weights

    @property
    def peak(self) -> int:
        return max(self.training_total, self.generation_total)


@dataclass
class DryRunReport:
    model: str
    config_source: str
    architecture: str
    shape: ModelShape
    run: RunShape
    memory: MemoryEstimate
    tokenizer_vocab: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def total_params(self) -> int:
        return self.run.total_params

    @property
    def trainable_params(self) -> int:
        return self.run.trainable_params

    @property
    def fits(self) -> bool:
        return self.memory.peak <= self.run.gpu_memory_gib * GIB



# ---------------------------------------------------------------- the config, without weights

def bundled_architectures() -> dict[str, Path]:
    """Hub id -> bundled config.json (file names use the cache's `owner--name`)."""
    return {p.stem.replace("--", "/", 1): p for p in sorted(ARCHITECTURES.glob("*.json"))}


def resolve_model_config(name: str) -> tuple[Any, str]:
    """(transformers config, where it came from), never touching the network or the weights."""
    from transformers import AutoConfig

    from thinkrl.models import is_tiny, resolve_model_path

    if is_tiny(name):
        return AutoConfig.from_pretrained(resolve_model_path(name)), "thinkrl tiny default"
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} holds no config.json; point model.name at a Hugging Face checkpoint folder")
        return AutoConfig.from_pretrained(str(path)), f"local folder {path}"
    cached = _cached_config(name)
    if cached is not None:
        return AutoConfig.from_pretrained(str(Path(cached).parent)), "Hugging Face cache"
    bundled = bundled_architectures()
    if name in bundled:
        values = json.loads(bundled[name].read_text())
        return AutoConfig.for_model(values.pop("model_type"), **values), "bundled architecture (no weights needed)"
    raise ModelNotFoundError(
        f"model '{name}' has no config.json here: not a local folder, not in the Hugging Face cache, and not one of "
        f"the bundled architectures ({', '.join(bundled)}); fetch it where there is network "
        f"(huggingface-cli download {name} config.json --local-dir DIR) and pass DIR"
    )


def _cached_config(repo_id: str) -> str | None:
    if name_is_path(repo_id):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id or cache is the same as "not cached"
        return None
    return found if isinstance(found, str) else None


def name_is_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def model_shape(config: Any) -> ModelShape:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return ModelShape(num_layers=text.num_hidden_layers, hidden_size=text.hidden_size,
                      intermediate_size=getattr(text, "intermediate_size", 4 * text.hidden_size),
                      num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim, vocab_rows=text.vocab_size)


def count_parameters(config: Any, lora_r: int | None = None,
                     lora_target: str | list[str] = "all-linear") -> tuple[int, int]:
    """(total, trainable) of the model built on the meta device; with `lora_r`, of the peft
    model thinkrl trains (LoRA on `lora_target`, base frozen). Tied weights count once."""
    import torch
    from transformers import AutoModelForCausalLM

    # torch's meta device rather than accelerate.init_empty_weights: the latter leaves tied
    # embeddings untied with transformers 5 and would count them twice.
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
        if lora_r is not None:
            from peft import LoraConfig, get_peft_model

            with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
                warnings.simplefilter("ignore", FutureWarning)
                model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules=lora_target))
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


# ---------------------------------------------------------------- the estimate (pure arithmetic)

def activation_elements_per_token(shape: ModelShape) -> int:
    """Elements one decoder layer keeps for backward per token, with a fused (SDPA/flash)
    attention that keeps no seq x seq scores: each RMSNorm ~5h (its input and fp32 copies),
    the q/k/v input h, q/k/v 2 kv-widths + h, attention output h, the MLP input h, and the
    SwiGLU's gate, up, silu(gate) and product (4 x intermediate)."""
    h = shape.hidden_size
    return 14 * h + 2 * shape.kv_dim + 4 * shape.intermediate_size


def estimate_memory(shape: ModelShape, run: RunShape) -> MemoryEstimate:
    """Bytes per GPU, term by term.

    ZeRO/FSDP over `num_gpus`: stage >= 1 shards optimizer states, >= 2 gradients, 3 the
    weights too (FSDP full shard is stage 3; thinkrl launches stages 0 and 3). Trained weights
    are fp32 whatever `dtype` says (mixed precision: half-precision compute under autocast), so
    a trainable parameter costs 4 bytes of weight, 4 of gradient and 8 of AdamW moments; a
    frozen one (the LoRA base, the reference model, vLLM's copy) costs `dtype`'s bytes. With
    LoRA the reference model is the base with the adapter switched off, so it costs nothing.
    """
    if run.num_gpus < 1:
        raise ConfigError(f"num_gpus must be >= 1, got {run.num_gpus}")
    if run.zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"zero_stage must be 0, 1, 2 or 3, got {run.zero_stage}")
    wbytes = DTYPE_BYTES[run.dtype]
    n = run.num_gpus

    def shard(value: float, from_stage: int) -> int:
        return math.ceil(value / n) if run.zero_stage >= from_stage else math.ceil(value)

    frozen = run.total_params - run.trainable_params
    weights = shard(run.trainable_params * 4 + frozen * wbytes, 3)
    gradients = shard(run.trainable_params * 4, 2)
    optimizer = shard(run.trainable_params * 8, 1)

    tokens = run.micro_batch_size * run.seq_len
    layer_full = activation_elements_per_token(shape) * tokens * wbytes
    if run.gradient_checkpointing:
        # Each layer keeps its input; backward recomputes one layer at a time.
        activations = shape.num_layers * shape.hidden_size * tokens * wbytes + layer_full
    else:
        activations = shape.num_layers * layer_full
    logits = shape.vocab_rows * tokens * 4  # fp32 logits for the log-probs
    reference = 0 if (not run.reference_model or run.lora) else shard(run.total_params * wbytes, 3)

    vllm = int(run.vllm_memory_fraction * run.gpu_memory_gib * GIB)
    kv_per_token = 2 * shape.num_layers * shape.kv_dim * wbytes
    vllm_weights = (frozen if run.lora else run.total_params) * wbytes
    vllm_kv_capacity = max(0, vllm - vllm_weights)

    resident = weights + optimizer + reference
    vllm_while_training = 0 if run.vllm_sleep else vllm
    training_total = resident + gradients + activations + logits + vllm_while_training
    generation_total = resident + vllm if vllm else 0
    return MemoryEstimate(weights=weights, gradients=gradients, optimizer=optimizer, activations=activations,
                          logits=logits, reference=reference, vllm=vllm, training_total=training_total,
                          generation_total=generation_total, kv_bytes_per_token=kv_per_token,
                          vllm_kv_capacity=vllm_kv_capacity)


# ---------------------------------------------------------------- the command

def dry_run(model_name: str, tokenizer: str | None = None, *, dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16",
            lora_r: int | None = None, lora_target: str | list[str] = "all-linear",
            gradient_checkpointing: bool = True, micro_batch_size: int = 8, seq_len: int = 1536,
            rollout_samples: int = 512, num_gpus: int = 1, zero_stage: int = 0,
            optimizer: Literal["adamw"] = "adamw", reference_model: bool = False,
            vllm_memory_fraction: float = 0.0, vllm_sleep: bool = True,
            gpu_memory_gib: float = 80.0) -> DryRunReport:
    """Count the model's parameters from its config alone and estimate GPU memory per device.

    `seq_len` is prompt + completion tokens; `rollout_samples` the sequences sampled per
    step (prompts x group), used to size vLLM's KV cache; `vllm_memory_fraction` 0 means
    no colocated vLLM (a separate server, or transformers generate).
    """
    if optimizer != "adamw":
        raise ConfigError(f"dry run knows the optimizer 'adamw' only, got '{optimizer}'")
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got '{dtype}'")
    config, source = resolve_model_config(model_name)
    shape = model_shape(config)
    total, trainable = count_parameters(config, lora_r, lora_target)
    run = RunShape(dtype=dtype, trainable_params=trainable, total_params=total, lora=lora_r is not None,
                   gradient_checkpointing=gradient_checkpointing, micro_batch_size=micro_batch_size,
                   seq_len=seq_len, rollout_samples=rollout_samples, num_gpus=num_gpus, zero_stage=zero_stage,
                   reference_model=reference_model, vllm_memory_fraction=vllm_memory_fraction,
                   vllm_sleep=vllm_sleep, gpu_memory_gib=gpu_memory_gib)
    memory = estimate_memory(shape, run)
    report = DryRunReport(model=model_name, config_source=source,
                          architecture=(getattr(config, "architectures", None) or [type(config).__name__])[0],
                          shape=shape, run=run, memory=memory)
    tok_name = tokenizer or (model_name if Path(model_name).expanduser().is_dir() else None)
    if tok_name is not None:
        report.tokenizer_vocab = len(_load_tokenizer(tok_name))
        if report.tokenizer_vocab > shape.vocab_rows:
            report.warnings.append(
                f"the tokenizer has {report.tokenizer_vocab} tokens but the embedding only {shape.vocab_rows} rows: "
                f"ids above {shape.vocab_rows - 1} would index out of range; resize the embeddings or use the model's tokenizer")
    else:
        report.warnings.append("no tokenizer given: vocabulary not checked against the embedding (set model.tokenizer)")
    if (max_positions := getattr(config, "max_position_embeddings", None)) and seq_len > max_positions:
        report.warnings.append(f"seq_len {seq_len} exceeds the model's max_position_embeddings {max_positions}")
    if memory.vllm and memory.vllm_kv_capacity == 0:
        report.warnings.append("vLLM's share does not even hold the weights: raise rollout.vllm.gpu_memory_utilization")
    if not report.fits:
        report.warnings.append(f"estimated peak {memory.peak / GIB:.1f} GiB exceeds {gpu_memory_gib:g} GiB per GPU: "
                               "more GPUs with ZeRO-3, gradient checkpointing, LoRA or a smaller micro batch")
    return report


def dry_run_for_grpo(cfg: Any, *, num_gpus: int = 1, zero_stage: int = 0, gpu_memory_gib: float = 80.0,
                     prompt_tokens: int = 512) -> DryRunReport:
    """The dry run of a GRPO config (GRPOConfig or a subclass): the model, batch and rollout
    settings come from the config; the launch (GPUs, ZeRO stage) from the caller."""
    rollout = cfg.rollout
    vllm_fraction = 0.0
    if getattr(rollout, "engine", "transformers") == "vllm":
        vllm = getattr(rollout, "vllm", None)
        if vllm is None or getattr(vllm, "mode", "colocate") == "colocate":
            vllm_fraction = getattr(vllm, "gpu_memory_utilization", 0.3)
    lora = cfg.model.lora
    return dry_run(cfg.model.name, getattr(cfg.model, "tokenizer", None), dtype=cfg.model.dtype,
                   lora_r=lora.r if lora.enabled else None, lora_target=lora.target_modules,
                   gradient_checkpointing=cfg.model.gradient_checkpointing,
                   micro_batch_size=cfg.optim.micro_batch_size, seq_len=prompt_tokens + rollout.max_new_tokens,
                   rollout_samples=rollout.prompts_per_step * rollout.group_size, num_gpus=num_gpus,
                   zero_stage=zero_stage, reference_model=cfg.algo.beta > 0, vllm_memory_fraction=vllm_fraction,
                   vllm_sleep=getattr(getattr(rollout, "vllm", None), "enable_sleep_mode", True),
                   gpu_memory_gib=gpu_memory_gib)


def _load_tokenizer(name: str) -> Any:
    """A local folder or the Hugging Face cache; never the network."""
    from transformers import AutoTokenizer

    from thinkrl.models import is_tiny, resolve_model_path

    try:
        if is_tiny(name) or Path(name).expanduser().exists():
            return AutoTokenizer.from_pretrained(resolve_model_path(name))
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except ModelNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - every loader failure means "no usable tokenizer here"
        raise ModelNotFoundError(f"tokenizer '{name}' is neither a local folder nor in the Hugging Face cache "
                                 f"({type(exc).__name__}); pass a folder holding tokenizer.json") from None


def print_dry_run(report: DryRunReport, console: Any = None) -> None:
    """The report as a rich table: one row per memory term, GiB per GPU."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    run, mem = report.run, report.memory
    launch = f"{run.num_gpus} GPU{'s' if run.num_gpus > 1 else ''}, ZeRO-{run.zero_stage}"
    console.print(f"[bold]{report.model}[/] ({report.architecture}, config from {report.config_source})")
    console.print(f"parameters: {report.total_params:,} total, {report.trainable_params:,} trainable"
                  + (" (LoRA)" if run.lora else ""))
    if report.tokenizer_vocab is not None:
        console.print(f"vocabulary: tokenizer {report.tokenizer_vocab:,}, embedding rows {report.shape.vocab_rows:,}")
    table = Table(title=f"GPU memory per device ({launch}, {run.dtype}, micro batch {run.micro_batch_size} x "
                        f"{run.seq_len} tokens)")
    table.add_column("term")
    table.add_column("GiB", justify="right")
    table.add_column("how")
    ckpt = "checkpointed" if run.gradient_checkpointing else "no checkpointing"
    rows = [
        ("weights", mem.weights, ("fp32 adapters, frozen base " + run.dtype if run.lora else "fp32 (trained)")
         + (", sharded" if run.zero_stage >= 3 else "")),
        ("gradients", mem.gradients, "fp32, trainable params" + (", sharded" if run.zero_stage >= 2 else "")),
        ("optimizer (AdamW)", mem.optimizer, "two fp32 moments" + (", sharded" if run.zero_stage >= 1 else "")),
        ("activations", mem.activations, ckpt),
        ("logits", mem.logits, "fp32, vocab x tokens"),
        ("reference model", mem.reference, "none" if not run.reference_model else
         ("LoRA: adapter off" if run.lora else f"frozen copy, {run.dtype}")),
        ("vLLM share", mem.vllm, "asleep while training" if run.vllm_sleep and mem.vllm else
         ("colocated" if mem.vllm else "not colocated")),
    ]
    for name, value, how in rows:
        table.add_row(name, f"{value / GIB:.2f}", how)
    table.add_row("[bold]training phase[/]", f"[bold]{mem.training_total / GIB:.2f}[/]", "")
    if mem.generation_total:
        table.add_row("[bold]generation phase[/]", f"[bold]{mem.generation_total / GIB:.2f}[/]", "")
    console.print(table)
    if mem.vllm:
        fit = mem.vllm_kv_capacity / max(1, run.seq_len * mem.kv_bytes_per_token)
        console.print(f"vLLM KV cache: {mem.vllm_kv_capacity / GIB:.1f} GiB free after weights, "
                      f"~{int(fit)} of {run.rollout_samples} sequences at once")
    verdict = "[green]fits[/]" if report.fits else "[red]does not fit[/]"
    console.print(f"peak {mem.peak / GIB:.1f} GiB of {run.gpu_memory_gib:g} GiB: {verdict}")
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
