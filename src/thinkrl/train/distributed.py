"""What a multi-process GRPO run needs beyond DDP itself: each process's share of the
step's prompts, and the step's rollout and update statistics gathered for logging.

Groups never straddle processes: process r takes prompts [r*p, (r+1)*p) of the step, with
all G samples of each, so advantages are computed where the group lives and need no
communication. Only the metrics are gathered, for the main process to log.

FSDP's sharded states are `thinkrl.train.sharding`'s; work that runs once per launch is
`thinkrl.processes`'.
"""

from __future__ import annotations

import torch

from thinkrl.rewards import RewardScores
from thinkrl.train.rollouts import Rollout


def local_share(index: list[int], rank: int, world: int) -> list[int]:
    """This process's prompts among the step's `index` (len(index) divisible by world)."""
    per = len(index) // world
    return index[rank * per:(rank + 1) * per]


def gather_rollout(accelerator, rollout: Rollout) -> Rollout:
    """Every process's rollout, concatenated in rank order (the main process logs it)."""
    if accelerator.num_processes == 1:
        return rollout
    from accelerate.utils import gather_object

    scores = rollout.scores
    names = list(scores.by_name)
    return Rollout(
        examples=gather_object(list(rollout.examples)),
        completions=gather_object(list(rollout.completions)),
        rewards=torch.tensor(gather_object(rollout.rewards.tolist())),
        advantages=torch.tensor(gather_object(rollout.advantages.tolist())),
        scores=RewardScores(
            total=gather_object(list(scores.total)),
            by_name={n: gather_object(list(scores.by_name[n])) for n in names},
            reasons={n: gather_object(list(scores.reasons[n])) for n in names},
            errors=sum(gather_object([scores.errors])), timeouts=sum(gather_object([scores.timeouts])),
        ),
        group_size=rollout.group_size,
        groups_sampled=sum(gather_object([rollout.groups_sampled])),
        zero_variance_groups=sum(gather_object([rollout.zero_variance_groups])),
        generated_tokens=sum(gather_object([rollout.generated_tokens])),
        group_pass=[tuple(pair) for pair in gather_object(list(rollout.group_pass))],
        extra=rollout.extra,
    )


def reduce_weighted(accelerator, totals: dict[str, float], weight: float) -> dict[str, float]:
    """Token-weighted means over all processes of per-process sums (`totals[k]` = sum of
    value x tokens on this process, `weight` = its tokens)."""
    keys = sorted(totals)
    packed = torch.tensor([totals[k] for k in keys] + [weight], dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        packed = accelerator.reduce(packed, reduction="sum")
    denominator = float(packed[-1]) or 1.0
    return {k: float(v) / denominator for k, v in zip(keys, packed[:-1].tolist())}


def max_over_processes(accelerator, value: float) -> float:
    """The largest `value` any process holds (every process must call it), of value's type."""
    if accelerator is None or accelerator.num_processes == 1:
        return value
    import torch.distributed as dist

    packed = torch.tensor([value], device=accelerator.device, dtype=torch.float64 if isinstance(value, float) else None)
    dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return type(value)(packed.item())


def check_launch(accelerator, lora: bool = False) -> None:
    """Refuse, in one line, the launches thinkrl cannot train and checkpoint correctly: DDP
    (any number of processes) and FSDP2 full fine-tuning are supported."""
    from accelerate.utils import DistributedType

    from thinkrl.errors import ConfigError

    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        raise ConfigError("DeepSpeed launches are not supported yet: for sharded training use "
                          "configs/accelerate/fsdp.yaml (FSDP2, the memory of ZeRO-3), else configs/accelerate/ddp.yaml")
    if kind != DistributedType.FSDP:
        return
    version = getattr(accelerator.state.fsdp_plugin, "fsdp_version", 1)
    if version != 2:
        raise ConfigError(f"FSDP version {version}: thinkrl trains with FSDP2 only; set fsdp_version: 2 in the "
                          "accelerate config (as configs/accelerate/fsdp.yaml does)")
    if lora:
        raise ConfigError("LoRA under FSDP is not supported: launch LoRA runs with configs/accelerate/ddp.yaml "
                          "(the frozen base needs no optimizer state); FSDP is for full fine-tuning")


def global_advantages(accelerator, rollout: Rollout, advantage: str, options: dict) -> torch.Tensor:
    """This process's advantages computed over the whole launch's batch: the batch-level
    estimators (REINFORCE++ whitening, GRPO's batch std) then see every process's rewards,
    as one process with the same global batch would. Every process holds as many rows, so
    its share is a slice of the rank-ordered whole; group estimators give the same numbers
    either way."""
    from accelerate.utils import gather_object

    from thinkrl.algos import ADVANTAGES

    rewards = torch.tensor(gather_object(rollout.rewards.tolist()), dtype=torch.float32)
    lengths = torch.tensor(gather_object([float(len(c.completion_ids)) for c in rollout.completions]))
    everyone = ADVANTAGES.call(advantage, options, rewards=rewards, group_size=rollout.group_size, lengths=lengths)
    rows = len(rollout.rewards)
    start = accelerator.process_index * rows
    return everyone[start:start + rows].to(rollout.advantages.dtype)
