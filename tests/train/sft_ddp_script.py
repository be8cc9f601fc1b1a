"""Launched by test_train_sft under `accelerate launch`: runs `train_sft` with the config
given as `section.field=value` overrides, one per argument. With SFT_WORLD_FILE set, each
process appends the number of processes it saw, so the test knows the launch was real."""

import os
import sys

import torch
from accelerate import PartialState

from thinkrl.config import load_config
from thinkrl.train.sft import train_sft
from thinkrl.train.sft_config import SFTConfig

if __name__ == "__main__":
    torch.set_num_threads(1)
    train_sft(load_config(SFTConfig, None, sys.argv[1:]))
    if os.environ.get("SFT_WORLD_FILE"):
        with open(os.environ["SFT_WORLD_FILE"], "a") as f:
            f.write(f"{PartialState().num_processes}\n")
