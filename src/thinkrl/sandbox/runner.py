"""Run untrusted Python against tests: the sandbox's public entry point.

Two processes per run, started here with scrubbed environments in new sessions:

- harness.py, the sandbox: fences itself in (isolation.py's modes), runs the program and
  answers calls to its functions. It is given the program and the names the tests may
  call, never the tests.
- tester.py, the tests' own interpreter: runs the test code, calls the program through a
  pair of pipes (plain data only, wire.py), and writes the verdict records on a third
  pipe that only it holds.

The parent plans the test units from syntax (plan.py), puts the sandbox's process tree in
a cgroup where the host allows it (cgroup.py), enforces the wall clock, the CPU time of
the whole tree and the output cap, kills everything at the end, and decides the verdict
from the tester's authenticated records only (verdict.py).
"""

from __future__ import annotations

import json
import os
import secrets
import select
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

from thinkrl.sandbox.cgroup import RunCgroup
from thinkrl.sandbox.limits import SandboxLimits, SandboxResult
from thinkrl.sandbox.plan import PlanError, TestPlan, plan_tests
from thinkrl.sandbox.verdict import Exit, Records, decide, parse_records

HARNESS = Path(__file__).with_name("harness.py")
TESTER = Path(__file__).with_name("tester.py")
NAMESPACE_MODES = ("namespaces", "userns")
_WORKDIR_IN_NAMESPACE = "/tmp/sandbox"
_READ_CHUNK = 65536
_DRAIN_AFTER_EXIT_S = 0.5  # stragglers holding the pipes after the harness exited (modes without a pid namespace)
_REPORT_WAIT_S = 0.5  # after the program's process ended mid-tests: time for its exit status to arrive
_MEMORY_SLACK_MB = 32  # the sandbox's own two small processes, in the run's cgroup
_PROCESS_FLOOR_MB = 64  # without a cgroup, no process gets less address space than this
_SYSTEM_LIBRARIES = ("/lib", "/lib64", "/lib32", "/libx32", "/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32", "/etc/ld.so.cache")


@dataclass
class RawRun:
    """What the parent saw: the result channel's bytes, the output, and how the process ended."""

    results: bytes
    stdout: bytes
    stderr: bytes
    ended: Exit
    duration_s: float
    nonce: str
    facts: dict | None = None  # a probe's measurements


def fresh_uid() -> int:
    """An unused uid per run (root modes): RLIMIT_NPROC then counts this run's processes only."""
    return 2_000_000 + secrets.randbelow(1_000_000)


def readable_by_others(path: str) -> bool:
    """True when every folder down to `path` lets any uid through (needed to drop to a fresh uid)."""
    path = os.path.realpath(path)
    while True:
        if not os.stat(path).st_mode & 0o005:
            return False
        if path == "/":
            return True
        path = os.path.dirname(path)


def drops_uid(mode: str) -> bool:
    """Whether the program runs as a fresh uid: every mode that starts as root, but userns."""
    return os.geteuid() == 0 and (mode == "namespaces" or (mode in ("setuid", "rlimits") and readable_by_others(sys.base_prefix)))


def interpreter() -> str:
    """The base interpreter (not a virtualenv's link to it): the sandbox runs it with -I -S,
    and its file lies inside the prefix that the program's root holds."""
    base = getattr(sys, "_base_executable", "") or sys.executable
    return os.path.realpath(base) if os.path.exists(base) else sys.executable


def _kept_paths() -> list[list[str]]:
    """What the program's empty root holds, read-only, as [path there, host path] pairs: the
    interpreter (its prefix, or its executable and stdlib where the prefix is /usr) and the
    system's shared libraries, at the paths the interpreter knows and at their real ones."""
    wanted = [*_SYSTEM_LIBRARIES, interpreter()]
    for prefix in dict.fromkeys((sys.base_prefix, sys.base_exec_prefix)):
        if os.path.realpath(prefix) in ("/", "/usr"):
            wanted.append(os.path.dirname(os.__file__))
        else:
            wanted.append(prefix)
    pairs = []
    for path in wanted:
        if os.path.exists(path):
            real = os.path.realpath(path)
            pairs += [[path, real], [real, real]] if real != path else [[path, path]]
    return [list(pair) for pair in dict.fromkeys(tuple(pair) for pair in pairs)]


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


def process_budget(limits: SandboxLimits, tree_bounded: bool) -> tuple[int, int]:
    """(processes, address space of each in MB). A cgroup bounds the tree's memory; without
    one, each process gets the run's memory divided by the process cap, so that the cap
    times each one's limit is still the run's limit."""
    if tree_bounded:
        return limits.max_processes, limits.memory_mb
    processes = max(1, min(limits.max_processes, limits.memory_mb // _PROCESS_FLOOR_MB))
    return processes, limits.memory_mb // processes


def build_job(mode: str, program: str, exposed: tuple[str, ...], limits: SandboxLimits, workdir: str, probe_dir: str = "") -> dict:
    """The sandbox's job: the program and what the tests may call in it, never the tests
    (launch adds the process and memory budget once it knows whether a cgroup bounds the run)."""
    return {
        "mode": mode,
        "uid": fresh_uid() if drops_uid(mode) else os.getuid(),
        "limits": limits.to_dict(),
        "workdir": workdir,
        "keep": _kept_paths(),
        "probe": bool(probe_dir),
        "probe_dir": probe_dir,
        "parent_pid": os.getpid(),
        "program": program,
        "exposed": list(exposed),
        "max_value_bytes": limits.max_value_bytes,
    }


def _budget(job: dict, limits: SandboxLimits, tree_bounded: bool) -> dict:
    processes, memory_mb = process_budget(limits, tree_bounded)
    nproc = processes if job["uid"] != os.getuid() else _user_process_count(os.getuid()) + processes
    return {"nproc": nproc, "memory_per_process_mb": memory_mb}


def test_job(plan: TestPlan, prelude: str, limits: SandboxLimits, same_uid: bool) -> dict:
    return {
        "prelude": prelude,
        "setup": plan.setup,
        "steps": [{"source": s.source, "is_unit": s.is_unit} for s in plan.steps],
        "candidate_name": plan.candidate_name,
        "candidate_expr": plan.candidate_expr,
        "exposed": list(plan.exposed),
        "max_value_bytes": limits.max_value_bytes,
        "undumpable": same_uid,
    }


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _start(script: Path, fds: tuple[int, ...], home: str, cwd: str, stdout: int = subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(
        [interpreter(), "-I", "-S", "-B", str(script)],
        stdin=subprocess.PIPE,
        stdout=stdout,
        stderr=subprocess.PIPE,
        pass_fds=fds,
        env=_scrubbed_env(home),
        cwd=cwd,
        start_new_session=True,
    )


def _feed(proc: subprocess.Popen, job: dict) -> None:
    try:
        proc.stdin.write(json.dumps(job).encode())  # each child reads all of stdin before anything else
        proc.stdin.close()
    except BrokenPipeError:
        pass


def _close(proc: subprocess.Popen) -> None:
    _kill_group(proc)
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream and not stream.closed:
            stream.close()


def launch(job: dict, limits: SandboxLimits, tests: dict | None) -> RawRun:
    """Start the sandbox on `job` and the tester on `tests` (None: a probe), connect them,
    watch both under the limits, and collect everything they sent."""
    in_namespace = job["mode"] in NAMESPACE_MODES
    made_workdir = None
    if not in_namespace:
        made_workdir = tempfile.mkdtemp(prefix="thinkrl-sandbox-")
        if job["uid"] != os.getuid():
            os.chown(made_workdir, job["uid"], job["uid"])
        job = {**job, "workdir": made_workdir}
    nonce = secrets.token_hex(16)
    group = RunCgroup.create(limits.memory_mb + _MEMORY_SLACK_MB, limits.max_processes + 2)
    job = {**job, **_budget(job, limits, tree_bounded=group is not None)}
    call_r, call_w = os.pipe()  # tester -> program
    reply_r, reply_w = os.pipe()  # program -> tester (or -> us, for a probe)
    result_r, result_w = os.pipe()  # tester -> us
    ours, started = [call_r, call_w, reply_r, reply_w, result_r, result_w], []
    start = time.monotonic()
    try:
        tester = None
        if tests is not None:
            tester = _start(TESTER, (call_w, reply_r, result_w), "/", "/", stdout=subprocess.DEVNULL)
            started.append(tester)
        harness = _start(HARNESS, (call_r, reply_w), job["workdir"], "/" if in_namespace else job["workdir"])
        started.append(harness)
        for fd in (call_r, call_w, reply_r, reply_w, result_w) if tester else (call_r, reply_w, result_w):
            os.close(fd)
            ours.remove(fd)
        if group is not None:
            group.add(harness.pid)  # before it reads its job, so before it can fork
        early = b""
        if tester is not None:
            _feed(tester, {**tests, "nonce": nonce, "result_fd": result_w, "call_fd": call_w, "reply_fd": reply_r})
            if tests["undumpable"]:  # the program runs as our uid: not before the tester is out of its reach
                early = _first_line(result_r, start + limits.wall_time_s)
        _feed(harness, {**job, "call_fd": call_r, "reply_fd": reply_w})
        channel = result_r if tester is not None else reply_r
        return _watch(harness, tester, channel, limits, start, nonce, group, early)
    finally:
        if group is not None:
            group.kill()
        for proc in started:
            _close(proc)
        for fd in ours:
            os.close(fd)
        if group is not None:
            group.remove()
        if made_workdir:
            shutil.rmtree(made_workdir, ignore_errors=True)


def _first_line(fd: int, deadline: float) -> bytes:
    """What `fd` gives up to its first newline (the tester's "ready"), or by the deadline."""
    data = b""
    while b"\n" not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 4096) if ready else b""
        if ready and not chunk:
            break
        data += chunk
    return data


def _watch(harness: subprocess.Popen, tester: subprocess.Popen | None, channel: int, limits: SandboxLimits,
           start: float, nonce: str, group: RunCgroup | None, early: bytes = b"") -> RawRun:
    """Read everything until the verdict channel closes (the tester is done) or a limit is hit."""
    deadline = start + limits.wall_time_s
    result_cap = 65536 + 256 * 4096
    buffers = {"results": bytearray(early), "stdout": bytearray(), "stderr": bytearray(), "tester": bytearray()}
    selector = selectors.DefaultSelector()
    selector.register(channel, selectors.EVENT_READ, "results")
    selector.register(harness.stdout, selectors.EVENT_READ, "stdout")
    selector.register(harness.stderr, selectors.EVENT_READ, "stderr")
    if tester is not None:
        selector.register(tester.stderr, selectors.EVENT_READ, "tester")
    timed_out = exceeded = over_cpu = False
    results_open = True
    with selector:
        while results_open:
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if group is not None and group.cpu_seconds() > limits.cpu_time_s:
                over_cpu = True
                break
            for key, _ in selector.select(timeout=min(deadline - now, 0.05)):
                chunk = os.read(key.fd, _READ_CHUNK)
                if not chunk:
                    selector.unregister(key.fileobj)
                    results_open = results_open and key.data != "results"
                    continue
                buffers[key.data] += chunk
            if len(buffers["stdout"]) + len(buffers["stderr"]) > limits.max_output_bytes:
                exceeded = True
                break
            if len(buffers["results"]) > result_cap or len(buffers["tester"]) > 65536:
                buffers["results"] += b"\x00"  # junk beyond any honest size: parse_records flags it
                break
        if not timed_out and b" channel gone" in buffers["results"]:
            _wait(harness, min(deadline, time.monotonic() + _REPORT_WAIT_S))  # its own exit status, not our kill
        if group is not None:
            group.kill()
        _kill_group(harness)
        drain_until = time.monotonic() + _DRAIN_AFTER_EXIT_S
        while selector.get_map() and time.monotonic() < drain_until and not exceeded:
            for key, _ in selector.select(timeout=max(0.0, drain_until - time.monotonic())):
                chunk = os.read(key.fd, _READ_CHUNK)
                if not chunk:
                    selector.unregister(key.fileobj)
                elif key.data in ("stdout", "stderr"):
                    buffers[key.data] += chunk[: max(0, limits.max_output_bytes - len(buffers["stdout"]) - len(buffers["stderr"]))]
    code = harness.wait()
    code = 128 - code if code < 0 else code
    oom = group is not None and group.oom_killed()
    facts = None
    if tester is None:
        facts = _probe_reply(bytes(buffers["results"]))
    elif buffers["tester"] and b" done " not in buffers["results"]:
        buffers["stderr"] += b"\n[sandbox tester] " + bytes(buffers["tester"][-2000:])
    return RawRun(
        results=bytes(buffers["results"]) if tester is not None else b"",
        stdout=bytes(buffers["stdout"]),
        stderr=bytes(buffers["stderr"]),
        ended=Exit(code=code, timed_out=timed_out or over_cpu, output_exceeded=exceeded, out_of_memory=oom),
        duration_s=time.monotonic() - start,
        nonce=nonce,
        facts=facts,
    )


def _wait(proc: subprocess.Popen, until: float) -> None:
    while proc.poll() is None and time.monotonic() < until:
        time.sleep(0.005)


def _probe_reply(data: bytes) -> dict:
    """A probe's one message: its facts, or why the sandbox could not be set up."""
    try:
        message = json.loads(data.split(b"\n", 1)[0])
        if message[0] == "facts":
            return {"ok": True, **json.loads(message[1])}
        if message[0] == "setup-error":
            return {"ok": False, "error": str(message[1])}
    except (ValueError, IndexError, TypeError, KeyError):
        pass
    return {"ok": False, "error": ""}


def _text(data: bytes, limit: int) -> str:
    return data[:limit].decode("utf-8", errors="replace")


def run_tests(
    program: str,
    tests: str,
    entry_point: str | None = None,
    limits: SandboxLimits | None = None,
    isolation: str | None = None,
    prelude: str = "",
) -> SandboxResult:
    """Run `program` in the sandbox and `tests` against it in a clean interpreter; never
    raises for anything the program does.

    `isolation` names a mode ("namespaces", "userns", "setuid", "rlimits"); by default the
    strongest that works here (the last two only when opted in: see isolation.py).
    `prelude` is trusted code the tests may use, such as a HumanEval prompt's helpers; it
    runs with the tests, not in the sandbox.
    """
    from thinkrl.sandbox.isolation import choose_mode, protect_caller

    limits = limits or SandboxLimits()
    mode = choose_mode(isolation)
    try:
        plan = plan_tests(tests, entry_point, prelude)
    except PlanError as exc:
        return SandboxResult(status="error", passed=0, total=1, detail=str(exc), isolation=mode, outcomes=["missing"])
    protect_caller(mode)
    workdir = _WORKDIR_IN_NAMESPACE if mode in NAMESPACE_MODES else ""
    job = build_job(mode, program, plan.exposed, limits, workdir)
    raw = launch(job, limits, test_job(plan, prelude, limits, same_uid=job["uid"] == os.getuid() and mode not in NAMESPACE_MODES))
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


Job = tuple[str, str, str | None] | tuple[str, str, str | None, str]


def run_many(
    jobs: list[Job],
    limits: SandboxLimits | None = None,
    max_workers: int = 2,
    isolation: str | None = None,
) -> list[SandboxResult]:
    """Run many (program, tests, entry_point[, prelude]) jobs, at most `max_workers` at a time; results in job order."""
    if not jobs:
        return []
    from thinkrl.sandbox.isolation import choose_mode

    mode = choose_mode(isolation)  # probe once, before the threads start
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        return list(pool.map(lambda job: run_tests(job[0], job[1], job[2], limits, mode, *job[3:]), jobs))
