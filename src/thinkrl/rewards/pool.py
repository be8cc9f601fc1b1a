"""Worker processes that run untrusted-input rewards under a hard per-call timeout.

Why not `concurrent.futures.ProcessPoolExecutor`: it cannot kill one stuck worker, and a
parse of `9^{9^{9}}` can sit in C code that no signal interrupts. Here each worker owns a
pipe; a call past its deadline gets the worker terminated (then killed) and a fresh one
started, while the other workers carry on. Workers are fresh interpreters (never forks) because the
caller usually has torch and its threads loaded.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PRELOAD = ("thinkrl.rewards",)  # imported before a worker says it is ready (sympy etc.)
START_TIMEOUT_S = 120.0  # a worker that is not ready by then is considered broken
_TERM_GRACE_S = 0.5  # SIGTERM lets a worker's `finally` blocks kill its sandbox; then SIGKILL
_IN_WORKER = False


def in_worker() -> bool:
    """True inside a pool worker, whose calls the parent already bounds in time."""
    return _IN_WORKER


@dataclass(frozen=True)
class Outcome:
    """How one call ended: status "ok" (value set), "error" or "timeout" (message set)."""

    status: str
    value: Any = None
    message: str = ""


def _exit_on_term(signum: int, frame: Any) -> None:
    raise SystemExit(1)


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker if the caller dies, even mid-computation in C."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001, S110 - elsewhere the worker still exits on EOF
        pass


def serve(read_fd: int, write_fd: int) -> None:
    """A worker's main loop: read (task, fn, args), reply (task, Outcome); stop on EOF or None."""
    global _IN_WORKER
    _IN_WORKER = True
    _die_with_parent()
    signal.signal(signal.SIGTERM, _exit_on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    setup = inbox.recv()
    sys.path[:] = setup["sys_path"]  # so rewards defined in the caller's modules unpickle
    if setup["memory_mb"] > 0:
        import resource

        limit = setup["memory_mb"] * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for module in setup["preload"]:
        importlib.import_module(module)
    outbox.send(("ready", None))
    while True:
        try:
            message = inbox.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        task, fn, args = message
        try:
            reply: tuple = (task, Outcome("ok", value=fn(*args)))
        except BaseException as exc:  # noqa: BLE001 - the reward's failure is data for the parent
            reply = (task, Outcome("error", message=f"{type(exc).__name__}: {exc}"[:500]))
        try:
            outbox.send(reply)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result
            outbox.send((task, Outcome("error", message=f"result could not be sent back: {exc}"[:500])))


_BOOT = "import sys; from thinkrl.rewards.pool import serve; serve(int(sys.argv[1]), int(sys.argv[2]))"


class _Worker:
    """One worker process and the two pipes to it. Started with subprocess rather than
    multiprocessing's spawn, which would re-run the caller's unguarded `__main__` script."""

    def __init__(self, preload: Sequence[str], memory_mb: int) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL, env=env, close_fds=True)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)  # so the parent sees EOF when the worker dies
        self.outbox = Connection(to_child_w, readable=False)
        self.conn = Connection(from_child_r, writable=False)
        self.outbox.send({"sys_path": list(sys.path), "preload": list(preload), "memory_mb": memory_mb})
        self.ready = False
        self.started_at = time.monotonic()
        self.task: int | None = None
        self.deadline = 0.0

    def send(self, message: Any) -> None:
        self.outbox.send(message)

    def stop(self, kill: bool = False) -> None:
        if self.process.poll() is None and not kill:
            try:
                self.outbox.send(None)
                self.process.wait(timeout=_TERM_GRACE_S)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: lets `finally` blocks (a sandbox's kill) run
            try:
                self.process.wait(timeout=_TERM_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.outbox.close()
        self.conn.close()


class WorkerPool:
    """A fixed number of persistent worker processes running `fn(*args)` calls with a timeout."""

    def __init__(self, size: int, preload: Sequence[str] = PRELOAD, memory_mb: int = 4096) -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker, got {size}")
        self.size = size
        self.preload = tuple(preload)
        self.memory_mb = memory_mb
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self.replaced = 0  # workers killed or lost and started again (for tests and logs)

    def _start(self) -> _Worker:
        return _Worker(self.preload, self.memory_mb)

    def run(self, calls: Sequence[tuple[Callable[..., Any], tuple]], timeout_s: float) -> list[Outcome]:
        """Run every call, at most `size` at a time; each gets `timeout_s` from when it is sent."""
        with self._lock:
            return self._run(list(calls), timeout_s)

    def _run(self, calls: list[tuple[Callable[..., Any], tuple]], timeout_s: float) -> list[Outcome]:
        results: list[Outcome | None] = [None] * len(calls)
        pending = deque(range(len(calls)))
        start_failures = 0
        while pending or any(w.task is not None for w in self._workers):
            while len(self._workers) < self.size:
                self._workers.append(self._start())
            now = time.monotonic()
            for worker in self._workers:
                if worker.ready and worker.task is None and pending:
                    index = pending.popleft()
                    fn, args = calls[index]
                    try:
                        worker.send((index, fn, args))
                    except Exception as exc:  # noqa: BLE001 - unpicklable call, or the worker just died
                        results[index] = Outcome("error", message=f"could not send to worker: {exc}"[:500])
                        continue
                    worker.task, worker.deadline = index, now + timeout_s
            watched = [w for w in self._workers if w.task is not None or not w.ready]
            if not watched:
                continue
            next_event = min(w.deadline if w.ready else w.started_at + START_TIMEOUT_S for w in watched)
            for conn in wait([w.conn for w in watched], timeout=max(0.0, next_event - time.monotonic())):
                worker = next(w for w in watched if w.conn is conn)
                try:
                    task, outcome = conn.recv()
                except (EOFError, OSError):
                    if worker.task is not None:
                        code = worker.process.poll()
                        results[worker.task] = Outcome("error", message=f"worker process died (exit code {code})")
                        worker.task = None
                    elif not worker.ready:
                        start_failures += 1
                    self._replace(worker)
                    continue
                if task == "ready":
                    worker.ready = True
                    start_failures = 0
                elif task == worker.task:
                    results[task] = outcome
                    worker.task = None
            now = time.monotonic()
            for worker in list(self._workers):
                if worker.task is not None and now >= worker.deadline:
                    results[worker.task] = Outcome("timeout", message=f"no result within {timeout_s:g} s")
                    worker.task = None
                    self._replace(worker)
                elif not worker.ready and now >= worker.started_at + START_TIMEOUT_S:
                    start_failures += 1
                    self._replace(worker)
            if start_failures >= 3 * self.size:
                while pending:
                    results[pending.popleft()] = Outcome("error", message="reward worker processes fail to start")
        return [r if r is not None else Outcome("error", message="not run") for r in results]

    def _replace(self, worker: _Worker) -> None:
        self._workers.remove(worker)
        worker.stop(kill=True)
        self.replaced += 1

    def close(self) -> None:
        if os.getpid() != self._owner:  # a forked copy: these processes are not ours
            self._workers = []
            return
        for worker in self._workers:
            worker.stop()
        self._workers = []


_pools: dict[str, WorkerPool] = {}
_pools_lock = threading.Lock()


def shared_pool(size: int, key: str = "batch") -> WorkerPool:
    """The process-wide pool for `key`, started on first use and kept warm between calls."""
    with _pools_lock:
        pool = _pools.get(key)
        if pool is not None and (pool.size != size or pool._owner != os.getpid()):
            pool.close()
            pool = None
        if pool is None:
            pool = _pools[key] = WorkerPool(size)
        return pool


def guarded_call(fn: Callable[..., Any], args: tuple, timeout_s: float) -> Outcome:
    """Run one call in a helper process with a hard timeout; inline when already in a worker.

    Lets a reward called directly (by eval, from any thread) stay bounded in time.
    """
    if _IN_WORKER:
        try:
            return Outcome("ok", value=fn(*args))
        except Exception as exc:  # noqa: BLE001
            return Outcome("error", message=f"{type(exc).__name__}: {exc}"[:500])
    return shared_pool(1, key="guard").run([(fn, args)], timeout_s)[0]


@atexit.register
def shutdown_pools() -> None:
    """Stop every pool's workers (also run at interpreter exit)."""
    with _pools_lock:
        for pool in _pools.values():
            pool.close()
        _pools.clear()
