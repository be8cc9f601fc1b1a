"""Launched by test_train_grpo_ddp, as a plain process and under `accelerate launch` with 2
CPU processes (DDP or FSDP, see launching.py): runs `train_grpo` with the config given as
`field=value` overrides. With GRPO_WORLD_FILE set, each process records the launch it saw;
with GRPO_SIGTERM_AT=STEP:RANK, that process sends itself SIGTERM during that step, and a
process the signal stopped exits with the CLI's status (143)."""

import os
import signal
import sys

import torch
from launching import fsdp_on_cpu, record_world

from thinkrl.config import load_config
from thinkrl.processes import exit_when_done
from thinkrl.rewards import RewardResult, register
from thinkrl.train import grpo
from thinkrl.train.config import GRPOConfig
from thinkrl.train.grpo import train_grpo
from thinkrl.train.interrupts import TrainingInterrupted


@register("test_ddp_sevens", isolate=False)
def sevens(completion: str, example, **options) -> RewardResult:
    """A reward with spread on random text: the share of characters that are '7'."""
    share = completion.count("7") / max(len(completion), 1)
    return RewardResult(share, "some" if share else "none")


def signal_during_step(at_step: int, rank: int) -> None:
    """SIGTERM to this process (if it is `rank`) while step `at_step` computes its metrics."""
    real = grpo.step_metrics
    calls = iter(range(1, 10**6))

    def step_metrics(*args, **kwargs):
        if next(calls) == at_step and os.environ.get("RANK", "0") == str(rank):
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    grpo.step_metrics = step_metrics


def main() -> None:
    torch.set_num_threads(1)
    if os.environ.get("FSDP_ON_CPU") == "1":
        fsdp_on_cpu()
    if os.environ.get("GRPO_SIGTERM_AT"):
        signal_during_step(*map(int, os.environ["GRPO_SIGTERM_AT"].split(":")))
    try:
        train_grpo(load_config(GRPOConfig, None, sys.argv[1:]))
    except TrainingInterrupted as exc:
        print(f"rank {os.environ.get('RANK', '0')}: {exc}", flush=True)
        sys.exit(exc.exit_code)
    record_world(os.environ.get("GRPO_WORLD_FILE"))


if __name__ == "__main__":
    exit_when_done(main)
