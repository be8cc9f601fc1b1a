"""Launched by test_processes on 2 CPU processes: ends while gloo still has work in flight
and something still holds the process group (as what `prepare` builds for DDP/FSDP does),
the state in which a finished launched run used to abort at exit ('terminate called
without an active exception'). The late process's work completes while it exits."""

import time

import torch
import torch.distributed as dist

from thinkrl.processes import exit_when_done

held = []


def main() -> None:
    dist.init_process_group("gloo")
    held.append(dist.group.WORLD)  # outlives destroy_process_group, and so do its threads
    dist.all_reduce(torch.ones(1 << 20))
    if dist.get_rank() == 0:
        time.sleep(0.5)  # the other process queues its share and heads for the exit first
    for size in range(16, 23):
        dist.all_reduce(torch.ones(1 << size), async_op=True)  # no Python reference kept


if __name__ == "__main__":
    exit_when_done(main)
