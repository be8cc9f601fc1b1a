"""Work that does not split over the processes of an `accelerate launch` (sampling a
dataset, an evaluation, bookkeeping) runs once, on the main process, while the others wait;
and the process group is torn down cleanly at exit. In a plain run these just run."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def launched_processes() -> int:
    """How many processes `accelerate launch` (torchrun) started; 1 for a plain run."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_launched_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def main_process_only(work: Callable[[], T], heartbeat_s: float = 30.0) -> T:
    """Run `work` on the main process while the others wait, and give every process its
    result. Under `accelerate launch`, work that does not split over processes (sampling a
    dataset, an evaluation, bookkeeping) runs once rather than once per process writing the
    same files. If it fails on the main process, every process stops with that error.

    The others wait in a series of short broadcasts (a heartbeat every `heartbeat_s`), not in
    one collective: an hour of sampling would outlast the process group's timeout."""
    if launched_processes() == 1:
        return work()
    import threading

    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list, parse_flag_from_env

    from thinkrl.errors import ThinkrlError

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # as Accelerator() would set it up
    if state.num_processes == 1:
        return work()
    if not state.is_main_process:
        while True:
            message = [None]
            broadcast_object_list(message, from_process=0)
            status, value = message[0]
            if status == "ok":
                return value
            if status == "error":
                raise ThinkrlError(f"the main process failed: {value}")

    done = threading.Event()

    def beat() -> None:
        while not done.wait(heartbeat_s):
            broadcast_object_list([("working", None)], from_process=0)

    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    try:
        result = work()
    except Exception as exc:  # handed to the waiting processes, then raised here too
        done.set()
        beating.join()
        broadcast_object_list([("error", f"{type(exc).__name__}: {exc}")], from_process=0)
        raise
    done.set()
    beating.join()
    broadcast_object_list([("ok", result)], from_process=0)
    return result


def close_process_group(finished: bool = True) -> None:
    """Tear down the process group of an `accelerate launch` before the interpreter exits:
    left to exit, gloo aborts the process now and then ('terminate called without an
    active exception'), failing a run that finished. A finished run first waits for every
    process (no collective still in flight anywhere); a failed one does not, since the
    others may never arrive."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
