"""Launched by test_train_sft under `accelerate launch` (DDP or FSDP, see launching.py): runs
`train_sft` with the config given as `section.field=value` overrides, one per argument. With
SFT_WORLD_FILE set, each process records the launch it saw, so the test knows it was real."""

import os
import sys

import torch
from launching import fsdp_on_cpu, record_world

from thinkrl.config import load_config
from thinkrl.processes import exit_when_done
from thinkrl.train.sft import train_sft
from thinkrl.train.sft_config import SFTConfig


def main() -> None:
    torch.set_num_threads(1)
    if os.environ.get("FSDP_ON_CPU") == "1":
        fsdp_on_cpu()
    train_sft(load_config(SFTConfig, None, sys.argv[1:]))
    record_world(os.environ.get("SFT_WORLD_FILE"))


if __name__ == "__main__":
    exit_when_done(main)
