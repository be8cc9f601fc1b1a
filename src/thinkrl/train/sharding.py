"""FSDP2 (configs/accelerate/fsdp.yaml): each process holds a shard of the weights,
gradients and optimizer state, and these are the places where that shows.

- sampling and main-process evaluation run on unsharded weights (`unsharded`);
- the frozen reference policy is sharded like the policy (`prepare_reference`);
- checkpoints gather the whole model and optimizer state on the main process
  (`full_states`), so they are the same Hugging Face folder and optimizer.pt that one process
  writes, and a run resumes under any launch (`load_sharded_optimizer`).
Without FSDP every function here is a no-op or the plain path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def is_sharded(accelerator) -> bool:
    """FSDP: each process holds a shard of the weights, gradients and optimizer state."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def prepare_reference(accelerator, reference):
    """The frozen reference policy on this process's device; under FSDP sharded like the
    policy (a whole 7B copy per GPU would cost what sharding saved)."""
    if reference is None:
        return None
    if not is_sharded(accelerator):
        return reference.to(accelerator.device)
    from accelerate.utils import fsdp2_prepare_model

    reference.requires_grad_(False)
    return fsdp2_prepare_model(accelerator, reference)  # what accelerate.prepare does to the policy


@contextlib.contextmanager
def unsharded(accelerator, model) -> Iterator[None]:
    """Under FSDP2, hold the whole weights on every process for the duration (sampling,
    evaluation). Sharded, every forward pass all-gathers every layer, so sampling N tokens
    moves the whole model over the network N times; unsharded, it is gathered once and the
    passes are local (2.2x faster sampling on 2 CPU processes with a tiny model). Every
    process must enter. Elsewhere this does nothing."""
    if not is_sharded(accelerator):
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.unshard()
    model.set_reshard_after_forward(False)
    try:
        yield
    finally:
        model.set_reshard_after_forward(bool(accelerator.state.fsdp_plugin.reshard_after_forward))
        for unit in units:
            unit.reshard()


def full_states(accelerator, model, optimizer=None) -> tuple[dict | None, dict | None]:
    """(model state, optimizer state) gathered whole on the main process under FSDP, so a
    checkpoint is the same Hugging Face folder and optimizer.pt a one-process run writes (and
    resumes with any number of processes). Every process must call it; it returns (None, None)
    on the others, and everywhere when nothing is sharded (the caller saves the module itself)."""
    if not is_sharded(accelerator):
        return None, None
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    optimizer_state = get_optimizer_state_dict(model, optimizer, options=options) if optimizer is not None else None
    if not accelerator.is_main_process:
        return None, None
    if optimizer_state is not None:
        optimizer_state = optimizer_state_by_index(optimizer_state, optimizer_names(model, optimizer))
    return model_state, optimizer_state


def load_sharded_optimizer(model, optimizer, state: dict) -> None:
    """Give each FSDP process its shard of a whole optimizer state (as optimizer.pt holds it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    by_name = optimizer_state_by_name(state, optimizer_names(model, optimizer))
    set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))


def optimizer_names(model, optimizer) -> list[str]:
    """The parameter names in the optimizer's own order (its state_dict's integer ids)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]


def optimizer_state_by_index(state: dict, names: list[str]) -> dict:
    """torch.distributed's name-keyed optimizer state -> `Optimizer.state_dict()`'s id-keyed one."""
    position = {name: i for i, name in enumerate(names)}
    return {"state": {position[n]: s for n, s in state["state"].items()},
            "param_groups": [{**g, "params": [position[n] for n in g["params"]]} for g in state["param_groups"]]}


def optimizer_state_by_name(state: dict, names: list[str]) -> dict:
    """The inverse of `optimizer_state_by_index`."""
    return {"state": {names[i]: s for i, s in state["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]}
