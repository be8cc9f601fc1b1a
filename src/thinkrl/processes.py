"""Work that does not split over the processes of an `accelerate launch` (sampling a
dataset, an evaluation, bookkeeping) runs once, on the main process, while the others wait;
and a launched process ends with its command's exit status, never with an abort in the
interpreter's teardown. In a plain run these just run."""

from __future__ import annotations

import atexit
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import NoReturn, TypeVar

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
    """Tear down the process group of an `accelerate launch`. A finished run first waits for
    every process (no collective still in flight anywhere); a failed one does not, since the
    others may never arrive."""
    dist = sys.modules.get("torch.distributed")  # never imported: no group to close
    if dist is not None and dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def exit_when_done(main: Callable[[], object]) -> NoReturn:
    """Run a command's `main` and exit with its status: 0 when it returns, a SystemExit's
    code, 1 (with the traceback printed) when it raises. Every entry point of a launched
    process (the CLI, scripts of one's own) should end through here.

    Why a launched process does not simply return: `destroy_process_group` stops gloo's
    worker threads only once nothing holds the group, and in a launched DDP or FSDP run
    something built by `prepare` still holds it, from C++. Those threads then live on into
    the interpreter's teardown, and one that releases a tensor there takes the GIL of a
    finalizing interpreter, which ends the thread with a forced unwind through C++ code that
    may not unwind: std::terminate, 'terminate called without an active exception',
    SIGABRT, and a run that finished is marked failed. So once the group is closed, a
    launched process does what teardown would do for it (join its non-daemon threads, run
    the atexit hooks: logging, trackers, weakref finalizers), flushes stdout/stderr, and
    leaves with os._exit. Files must be closed by then (thinkrl writes through `with`
    blocks); nothing else of the teardown is needed."""
    if launched_processes() == 1:
        try:
            main()
        finally:
            close_process_group(finished=False)  # a plain run has no group unless `main` made one
        sys.exit(0)
    code = _exit_status(main)
    try:
        close_process_group(finished=code == 0)
    except Exception:  # noqa: BLE001 - a peer that died before the barrier
        traceback.print_exc()
        code = code or 1
    _exit_without_teardown(code)


def _exit_status(main: Callable[[], object]) -> int:
    """What the interpreter would have exited with had `main` been run as a script."""
    try:
        main()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        return 130
    except BaseException:  # noqa: BLE001 - reported as the interpreter would, as status 1
        traceback.print_exc()
        return 1
    return 0


def _exit_without_teardown(code: int) -> NoReturn:
    threading._shutdown()  # type: ignore[attr-defined]  # what teardown runs first: joins non-daemon threads, executors
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone: nothing left to lose
            pass
    os._exit(code)
