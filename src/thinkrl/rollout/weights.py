"""The policy's weights as an inference engine that holds its own copy needs them: named as
the base checkpoint names them, a LoRA adapter merged in, FSDP2 shards gathered. One module
for every engine that syncs weights (vLLM colocated, a vLLM server), not inside one of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def base_weight_name(name: str) -> str | None:
    """The Hugging Face name vLLM's `load_weights` expects for one state_dict key of the
    trained model, or None for a tensor vLLM must not receive (LoRA factors, peft's copy of
    an original module). Strips the wrappers: DDP `module.`, torch.compile `_orig_mod.`,
    peft `base_model.model.` and `.base_layer`, `modules_to_save.default`."""
    for prefix in ("module.", "_orig_mod.", "base_model.model."):
        name = name.removeprefix(prefix)
    if ".lora_" in name or ".original_module." in name:
        return None
    return name.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")


@contextmanager
def merged_weights(model: Any, dtype: Any = None, only: set[str] | None = None) -> Iterator[list[tuple[str, Any]]]:
    """(name, tensor) pairs of the policy with any LoRA adapter merged in, named as the base
    checkpoint names them. The adapter is merged in place for the duration and unmerged on
    exit (no second copy of a 7B model); pass the model unwrapped (accelerator.unwrap_model).
    Under FSDP2 every process must call it: the shards are gathered tensor by tensor, each
    cast to `dtype` (vLLM's) as it comes, so the gathered copy of fp32 master weights costs
    half as much in bf16. Unsharded tensors are passed as they are (views, no copy): vLLM
    casts as it loads them. `only`: the names to yield (`changing_weight_names`), None: all."""
    model = getattr(model, "_orig_mod", model)
    is_peft = hasattr(model, "merge_adapter") and hasattr(model, "peft_config")
    if is_peft:
        model.merge_adapter()
    try:
        config = getattr(model, "config", None)
        tied = bool(getattr(config, "tie_word_embeddings", False))
        items = []
        for key, tensor in model.state_dict().items():
            name = base_weight_name(key)
            # A tied head is the embedding: vLLM ties it itself and rejects a second copy.
            if name is None or (tied and name == "lm_head.weight") or (only is not None and name not in only):
                continue
            if hasattr(tensor, "full_tensor"):  # an FSDP2 shard (DTensor): gather it (collective)
                tensor = tensor.full_tensor() if dtype is None else tensor.full_tensor().to(dtype)
            items.append((name, tensor.detach()))
        yield items
    finally:
        if is_peft:
            model.unmerge_adapter()


def changing_weight_names(model: Any) -> set[str]:
    """The base-checkpoint names of the tensors an optimiser step can change: every trainable
    parameter, and for a LoRA module the base weight the merge rewrites. Frozen weights
    and persistent buffers are left out, so a sync after the first need not send them."""
    names = set()
    for key, param in getattr(model, "_orig_mod", model).named_parameters():
        if not param.requires_grad:
            continue
        if ".lora_" in key:  # ...q_proj.lora_A.default.weight: the merge rewrites q_proj's base weight
            key = key.split(".lora_")[0] + ".base_layer.weight"
        name = base_weight_name(key)
        if name is not None:
            names.add(name)
    return names


def tensor_bytes(tensor: Any, dtype: Any = None) -> int:
    """Bytes of `tensor` once cast to `dtype` (None: its own)."""
    import torch

    size = torch.empty((), dtype=dtype or tensor.dtype).element_size()
    return tensor.numel() * size


def buckets(items: list[tuple[str, Any]], limit: int, dtype: Any = None) -> Iterator[list[tuple[str, Any]]]:
    """`items` cut, in order, into runs of at most `limit` bytes (in `dtype`); a tensor over
    the limit is a run of its own."""
    bucket: list[tuple[str, Any]] = []
    size = 0
    for name, tensor in items:
        n = tensor_bytes(tensor, dtype)
        if bucket and size + n > limit:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += n
    if bucket:
        yield bucket
