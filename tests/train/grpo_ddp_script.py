"""Launched by test_train_grpo_ddp, once as a plain process and once under `accelerate
launch` with 2 CPU processes: runs `train_grpo` with the config given as `field=value`
overrides. With GRPO_WORLD_FILE set, each process appends the world size it saw."""

import os
import sys

import torch
from accelerate import PartialState

from thinkrl.config import load_config
from thinkrl.rewards import RewardResult, register
from thinkrl.train.config import GRPOConfig
from thinkrl.train.grpo import train_grpo


@register("test_ddp_sevens", isolate=False)
def sevens(completion: str, example, **options) -> RewardResult:
    """A reward with spread on random text: the share of characters that are '7'."""
    share = completion.count("7") / max(len(completion), 1)
    return RewardResult(share, "some" if share else "none")


if __name__ == "__main__":
    torch.set_num_threads(1)
    train_grpo(load_config(GRPOConfig, None, sys.argv[1:]))
    if os.environ.get("GRPO_WORLD_FILE"):
        with open(os.environ["GRPO_WORLD_FILE"], "a") as f:
            f.write(f"{PartialState().num_processes}\n")
