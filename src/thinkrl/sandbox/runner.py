"""Run untrusted Python against tests in a fenced-in child process: the sandbox's public entry point.

The parent (this module) plans the test units from syntax, starts harness.py in a new
session with a scrubbed environment, feeds it the job on stdin, enforces the wall clock
and the output cap, kills the whole process group at the end, and decides the verdict
from the harness's authenticated records only (verdict.py).
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from thinkrl.sandbox.limits import SandboxLimits, SandboxResult
from thinkrl.sandbox.plan import PlanError, TestPlan, plan_tests
from thinkrl.sandbox.verdict import Exit, Records, decide, parse_records

HARNESS = Path(__file__).with_name("harness.py")
NAMESPACE_MODES = ("namespaces", "userns")
_WORKDIR_IN_NAMESPACE = "/tmp/sandbox"
_READ_CHUNK = 65536
_DRAIN_AFTER_EXIT_S = 0.5  # stragglers holding the pipes after the harness exited (modes without a pid namespace)


@dataclass
class RawRun:
    """What the parent saw: the result channel's bytes, the output, and how the process ended."""

    results: bytes
    stdout: bytes
    stderr: bytes
    ended: Exit
    duration_s: float
    nonce: str


def fresh_uid() -> int:
    """An unused uid per run (root modes): RLIMIT_NPROC then counts this run's processes only."""
    return 2_000_000 + secrets.randbelow(1_000_000)


def _hidden_paths() -> list[str]:
    """Host folders a program has no business reading: homes, the grader's checkout, our cwd."""
    paths = ["/root", "/home"]
    repo = Path(__file__).resolve().parents[3]
    if (repo / "pyproject.toml").exists():
        paths.append(str(repo))
    cwd = os.getcwd()
    if cwd != "/":
        paths.append(cwd)
    return list(dict.fromkeys(paths))


def _kept_paths() -> list[str]:
    """What the interpreter needs after the hide: its prefix (pyenv installs live under /root)."""
    return sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)})


def _user_process_count(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


def _scrubbed_env(home: str) -> dict[str, str]:
    """Nothing from the parent's environment (tokens, keys) reaches the child."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}


def build_job(mode: str, plan: TestPlan | None, program: str, limits: SandboxLimits, workdir: str, probe_dir: str = "") -> dict:
    uid = fresh_uid() if mode in ("namespaces", "setuid") else os.getuid()
    nproc = limits.max_processes if mode in ("namespaces", "setuid") else _user_process_count(os.getuid()) + limits.max_processes
    return {
        "mode": mode,
        "uid": uid,
        "nproc": nproc,
        "limits": limits.to_dict(),
        "workdir": workdir,
        "hide": _hidden_paths(),
        "keep": _kept_paths(),
        "probe": plan is None,
        "probe_dir": probe_dir,
        "program": program,
        "setup": plan.setup if plan else "",
        "steps": [{"source": s.source, "is_unit": s.is_unit} for s in plan.steps] if plan else [],
        "candidate_name": plan.candidate_name if plan else None,
        "candidate_expr": plan.candidate_expr if plan else None,
    }


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def launch(job: dict, limits: SandboxLimits) -> RawRun:
    """Start the harness on `job`, watch it under the limits, and collect everything it sent."""
    in_namespace = job["mode"] in NAMESPACE_MODES
    made_workdir = None
    if not in_namespace:
        made_workdir = tempfile.mkdtemp(prefix="thinkrl-sandbox-")
        if job["mode"] == "setuid":
            os.chown(made_workdir, job["uid"], job["uid"])
        job = {**job, "workdir": made_workdir}
    nonce = secrets.token_hex(16)
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", str(HARNESS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(write_fd,),
            env=_scrubbed_env(job["workdir"]),
            cwd="/" if in_namespace else job["workdir"],
            start_new_session=True,
        )
    finally:
        os.close(write_fd)
    try:
        return _watch(proc, read_fd, {**job, "fd": write_fd, "nonce": nonce}, limits, start)
    finally:
        _kill_group(proc)
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream and not stream.closed:
                stream.close()
        os.close(read_fd)
        if made_workdir:
            shutil.rmtree(made_workdir, ignore_errors=True)


def _watch(proc: subprocess.Popen, read_fd: int, job: dict, limits: SandboxLimits, start: float) -> RawRun:
    try:
        proc.stdin.write(json.dumps(job).encode())  # the harness reads all of stdin before anything else
        proc.stdin.close()
    except BrokenPipeError:
        pass
    deadline = start + limits.wall_time_s
    result_cap = 65536 + 256 * (len(job["steps"]) + 4)
    buffers = {"results": bytearray(), "stdout": bytearray(), "stderr": bytearray()}
    selector = selectors.DefaultSelector()
    selector.register(read_fd, selectors.EVENT_READ, "results")
    selector.register(proc.stdout, selectors.EVENT_READ, "stdout")
    selector.register(proc.stderr, selectors.EVENT_READ, "stderr")
    timed_out = exceeded = False
    exited_at = None
    with selector:
        while selector.get_map():
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > _DRAIN_AFTER_EXIT_S:
                break
            if now >= deadline:
                timed_out = exited_at is None and proc.poll() is None
                break
            wait_s = min(deadline - now, 0.05 if exited_at is None else _DRAIN_AFTER_EXIT_S)
            for key, _ in selector.select(timeout=wait_s):
                fd = key.fd
                chunk = os.read(fd, _READ_CHUNK)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffers[key.data] += chunk
            if len(buffers["stdout"]) + len(buffers["stderr"]) > limits.max_output_bytes:
                exceeded = True
                break
            if len(buffers["results"]) > result_cap:
                buffers["results"] += b"\x00"  # junk beyond any honest size: parse_records flags it
                break
    _kill_group(proc)
    code = proc.wait()
    code = 128 - code if code < 0 else code
    return RawRun(
        results=bytes(buffers["results"]),
        stdout=bytes(buffers["stdout"]),
        stderr=bytes(buffers["stderr"]),
        ended=Exit(code=code, timed_out=timed_out, output_exceeded=exceeded),
        duration_s=time.monotonic() - start,
        nonce=job["nonce"],
    )


def _text(data: bytes, limit: int) -> str:
    return data[:limit].decode("utf-8", errors="replace")


def run_tests(
    program: str,
    tests: str,
    entry_point: str | None = None,
    limits: SandboxLimits | None = None,
    isolation: str | None = None,
) -> SandboxResult:
    """Run `program`, then `tests` against it, in the sandbox; never raises for anything the program does.

    `isolation` forces a mode ("namespaces", "userns", "setuid", "rlimits"); by default the
    strongest one that works here is used (see isolation.py).
    """
    from thinkrl.sandbox.isolation import choose_mode

    limits = limits or SandboxLimits()
    mode = isolation or choose_mode()
    try:
        plan = plan_tests(tests, entry_point)
    except PlanError as exc:
        return SandboxResult(status="error", passed=0, total=1, detail=str(exc), isolation=mode, outcomes=["missing"])
    workdir = _WORKDIR_IN_NAMESPACE if mode in NAMESPACE_MODES else ""
    raw = launch(build_job(mode, plan, program, limits, workdir), limits)
    records: Records = parse_records(raw.results, raw.nonce)
    status, passed, outcomes, detail = decide(records, plan.total, raw.ended)
    return SandboxResult(
        status=status,
        passed=passed,
        total=plan.total,
        stdout=_text(raw.stdout, limits.max_output_bytes),
        stderr=_text(raw.stderr, limits.max_output_bytes),
        duration_s=raw.duration_s,
        detail=detail,
        isolation=mode,
        outcomes=outcomes,
    )


def run_many(
    jobs: list[tuple[str, str, str | None]],
    limits: SandboxLimits | None = None,
    max_workers: int = 2,
    isolation: str | None = None,
) -> list[SandboxResult]:
    """Run many (program, tests, entry_point) jobs, at most `max_workers` at a time; results in job order."""
    if not jobs:
        return []
    from thinkrl.sandbox.isolation import choose_mode

    mode = isolation or choose_mode()  # probe once, before the threads start
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        return list(pool.map(lambda job: run_tests(job[0], job[1], job[2], limits, mode), jobs))
