"""Which rows each SFT step trains on, and which process takes which micro-batch of them.

A pure function of the row count, batch size and seed, so a resumed run finds its data
position from the step number alone, and a run on any number of processes trains on the
same rows at the same step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StepPlan:
    """Which rows each optimiser step trains on: epoch e visits the rows in a permutation
    seeded by (seed, e), `batch_size` at a time (an epoch's last step may hold fewer).

    A pure function of the row count, batch size and seed: a resumed run finds its data
    position from the step number alone, and a run on any number of processes trains on
    the same rows at the same step."""

    steps: list[list[int]]  # row (unit) indices of each step
    steps_per_epoch: int

    def epoch(self, step: int) -> float:
        """Epochs done after `step` (1-based), as a fraction."""
        return step / self.steps_per_epoch


def plan_steps(n_rows: int, batch_size: int, seed: int, epochs: int, max_steps: int = 0) -> StepPlan:
    steps_per_epoch = -(-n_rows // batch_size)
    total = max_steps or epochs * steps_per_epoch
    steps: list[list[int]] = []
    epoch = 0
    while len(steps) < total:
        order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
        steps += [order[i:i + batch_size] for i in range(0, n_rows, batch_size)]
        epoch += 1
    return StepPlan(steps=steps[:total], steps_per_epoch=steps_per_epoch)


FILLER = -1  # a row index standing for "no row": keeps every process at the same micro-batch count


def deal_micro_batches(steps: list[list[int]], processes: int, micro_batch_size: int,
                       batch_size: int) -> list[list[int]]:
    """The micro-batches of `steps` in the order accelerate's sharded loader deals them out
    (batch i goes to process i % processes): process p gets the p-th slice of each step's
    rows, as batch_size / (processes x micro_batch_size) micro-batches. A short last step
    is padded with FILLER batches, so every process syncs gradients at every step."""
    share = batch_size // processes
    accum = share // micro_batch_size
    dealt: list[list[int]] = []
    for rows in steps:
        per_process = []
        for p in range(processes):
            mine = rows[p * share:(p + 1) * share]
            batches = [mine[i:i + micro_batch_size] for i in range(0, len(mine), micro_batch_size)]
            per_process.append(batches + [[FILLER]] * (accum - len(batches)))
        dealt += [per_process[p][k] for k in range(accum) for p in range(processes)]
    return dealt
