"""Launched by test_train_grpo_ddp, as a plain process and under `accelerate launch` with 2
CPU processes (DDP or FSDP, see launching.py): runs `train_grpo` with the config given as
`field=value` overrides. With GRPO_WORLD_FILE set, each process records the launch it saw."""

import os
import sys

import torch
from launching import fsdp_on_cpu, record_world

from thinkrl.config import load_config
from thinkrl.processes import exit_when_done
from thinkrl.rewards import RewardResult, register
from thinkrl.train.config import GRPOConfig
from thinkrl.train.grpo import train_grpo


@register("test_ddp_sevens", isolate=False)
def sevens(completion: str, example, **options) -> RewardResult:
    """A reward with spread on random text: the share of characters that are '7'."""
    share = completion.count("7") / max(len(completion), 1)
    return RewardResult(share, "some" if share else "none")


def main() -> None:
    torch.set_num_threads(1)
    if os.environ.get("FSDP_ON_CPU") == "1":
        fsdp_on_cpu()
    train_grpo(load_config(GRPOConfig, None, sys.argv[1:]))
    record_world(os.environ.get("GRPO_WORLD_FILE"))


if __name__ == "__main__":
    exit_when_done(main)
