"""The sandbox child: fence itself in, run the untrusted program, then each test unit, and report.

Started by runner.py as `python -I -S -B harness.py` with the job (program, test plan,
limits, a per-run nonce, the result fd number) as JSON on stdin. Standard library only.

Process tree (namespace modes):

    harness (outside the pid namespace; waits, relays the exit status)
      └─ supervisor (pid 1 of a new pid namespace, root: sets up mounts, never runs
         │           untrusted code; when it exits the kernel kills the whole namespace)
         └─ worker (unprivileged, rlimited, seccomp: runs the program and the tests)

Verdict channel: the worker writes `<nonce> <seq> <kind> ...` lines to an inherited pipe.
The parent accepts only well-formed lines with the right nonce and consecutive sequence
numbers, and counts a unit as passed only from a "unit i pass" record, which the worker
writes after executing that unit without an exception. Exiting early, printing, or writing
junk to every fd therefore never yields a pass; a forged or out-of-order record marks the
whole run "tampered" (score 0).

Threat model: the program shares the worker's address space and uid, so a program that
digs the nonce out of the interpreter (gc.get_objects() to the recorder's closure, frame
objects reached from a traceback, a profiler rewriting the harness's locals, ctypes)
could forge records; that takes deliberate interpreter surgery, not a lucky completion.
Everything short of that is handled below: patching builtins, stdlib modules or
AssertionError, rebinding the harness's globals, trace/profile hooks, sys.exit and
os._exit, objects whose __eq__ always says True, printing "PASS". The fix for the rest
would be to evaluate the asserts in a process that never runs program code and ask the
worker only for plain-data return values.
"""

import json
import os
import signal
import sys

PRELOAD = (
    "math",
    "re",
    "string",
    "collections",
    "itertools",
    "functools",
    "heapq",
    "bisect",
    "operator",
    "typing",
    "copy",
    "random",
    "fractions",
    "decimal",
    "statistics",
    "hashlib",
)


def _load_jail():
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jail.py")
    spec = importlib.util.spec_from_file_location("thinkrl_sandbox_jail", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_recorder(fd, nonce):
    """A closure that writes authenticated, numbered records; the nonce lives only in here."""
    write, encode, allowed = os.write, str.encode, frozenset(b'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:,{}"[]-=/ ')
    key = encode(nonce, "ascii")
    state = [0]

    def record(kind, *fields):
        parts = []
        for value in fields:
            try:
                raw = encode(value if type(value) is str else repr(value), "ascii", "replace")[:2000]
                parts.append(bytes(b for b in raw if b in allowed) or b"-")
            except BaseException:
                parts.append(b"?")
        line = b" ".join([key, b"%d" % state[0], encode(kind, "ascii")] + parts) + b"\n"
        state[0] += 1
        write(fd, line)

    return record


def run_program_and_tests(job, record):
    """Execute the program, then every step of the plan; record each unit's outcome."""
    import builtins
    import threading
    import types

    for name in PRELOAD:  # loaded now so their pristine state is snapshotted below
        try:
            __import__(name)
        except ImportError:
            pass
    # Everything the verdict depends on is bound here, before untrusted code can patch it.
    _exec, _eval, _compile, _dict, _type, _id, _set, _len, _enum = exec, eval, compile, dict, type, id, set, len, enumerate
    _Base, _Memory, _Type, _Function = BaseException, MemoryError, TypeError, types.FunctionType
    _settrace, _setprofile, _thread_settrace = sys.settrace, sys.setprofile, threading.settrace
    plain_types = (bool, int, float, complex, str, bytes, type(None), list, tuple, dict, set, frozenset)
    containers = (list, tuple, set, frozenset)
    missing = object()
    pristine_builtins = _dict(builtins.__dict__)
    snapshots = [
        (m.__dict__, _dict(m.__dict__))
        for n, m in list(sys.modules.items())
        if n not in ("__main__", "sys") and _type(m) is types.ModuleType
    ]

    def reason(exc):
        try:
            return _type(exc).__name__
        except _Base:
            return "?"

    def reset():
        """Undo what the program may have patched: tracers, builtins, stdlib module attributes."""
        _settrace(None)
        _setprofile(None)
        _thread_settrace(None)
        for live, saved in snapshots:
            for key, value in saved.items():
                if live.get(key, missing) is not value:
                    live[key] = value

    def is_plain(value):
        """Only exact builtin data types: an object with a forged __eq__ cannot satisfy an assert."""
        stack, seen = [value], _set()
        while stack:
            item = stack.pop()
            kind = _type(item)
            if not any(kind is t for t in plain_types):
                return False
            if any(kind is t for t in containers) or kind is dict:
                if _id(item) in seen:
                    continue
                seen.add(_id(item))
                stack.extend(item.items() if kind is dict else item)
        return True

    def guard(fn):
        def guarded(*args, **kwargs):
            out = fn(*args, **kwargs)
            if not is_plain(out):
                raise _Type("the function under test returned a non-plain value")
            return out

        return guarded

    steps = job["steps"]
    try:
        setup_code = _compile(job["setup"], "<tests>", "exec")
        step_codes = [_compile(step["source"], "<test unit>", "exec") for step in steps]
        program_code = _compile(job["program"], "<program>", "exec")
    except _Base as exc:
        record("program", "error", reason(exc))
        record("done", sum(1 for s in steps if s["is_unit"]))
        return

    ns = {"__name__": "__solution__", "__builtins__": builtins}
    try:
        _exec(program_code, ns)
        outcome = "ok"
    except _Memory:
        outcome = "memory"
    except _Base as exc:
        outcome = "error:" + reason(exc)
    for _ in range(8):  # a tracer that raises is unset by CPython; retry until ours is the last word
        try:
            _setprofile(None)
            _settrace(None)
            break
        except _Base:
            pass
    record("program", *outcome.split(":", 1))

    reset()
    tns = {k: (guard(v) if _type(v) is _Function and v.__globals__ is ns else v) for k, v in ns.items()}
    tns["__builtins__"] = _dict(pristine_builtins)
    tns["__name__"] = "__tests__"
    try:
        _exec(setup_code, tns)
    except _Base:
        pass  # the units that need the setup fail on their own
    candidate = None
    if job["candidate_expr"]:
        try:
            candidate = guard(_eval(job["candidate_expr"], tns))
        except _Base:
            candidate = None
    unit = 0
    for index, code in _enum(step_codes):
        reset()
        tns["__builtins__"] = _dict(pristine_builtins)
        if job["candidate_name"] and candidate is not None:
            tns[job["candidate_name"]] = candidate
        try:
            _exec(code, tns)
            outcome, why = "pass", ""
        except _Memory:
            outcome, why = "memory", "MemoryError"
        except _Base as exc:
            outcome, why = "fail", reason(exc)
        if steps[index]["is_unit"]:
            record("unit", unit, outcome, why)
            unit += 1
    record("done", unit)


def probe_facts(jail, job):
    """What the worker can and cannot do, measured from inside (for isolation_report)."""
    import socket

    facts = {"uid": os.getuid(), "pid": os.getpid()}
    target = os.path.join(job["probe_dir"], "written-from-sandbox")
    try:
        with open(target, "w"):
            pass
        os.unlink(target)
        facts["host_writable"] = True
    except OSError:
        facts["host_writable"] = False
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        facts["inet_socket"] = True
    except OSError:
        facts["inet_socket"] = False
    try:
        facts["interfaces"] = [name for _, name in socket.if_nameindex()]
    except OSError:
        facts["interfaces"] = []
    return facts


def worker(jail, job, record, facts):
    os.chdir(job["workdir"])
    if job["mode"] in ("namespaces", "setuid"):
        jail.drop_privileges(job["uid"], job["uid"])
    elif job["mode"] == "userns":
        jail.drop_capabilities()
    jail.apply_rlimits(job["limits"], job["nproc"])
    try:
        jail.install_seccomp(block_network=not job["limits"]["network"])
        facts["seccomp"] = True
    except OSError:
        facts["seccomp"] = False
        try:
            jail.prctl(jail.PR_SET_NO_NEW_PRIVS, 1)
        except OSError:
            pass
    if job["probe"]:
        facts.update(probe_facts(jail, job))
        record("ready", json.dumps(facts))
        return
    record("ready", json.dumps(facts))
    try:
        run_program_and_tests(job, record)
    except BaseException:
        os._exit(4)  # the program broke the harness (closed fds, raising tracers): missing units fail


def supervisor(jail, job, record):
    """Pid 1 of the sandbox in namespace modes: build the filesystem view, then watch the worker."""
    facts = {"mode": job["mode"]}
    jail.prctl(jail.PR_SET_PDEATHSIG, signal.SIGKILL)
    if job["mode"] in ("namespaces", "userns"):
        facts["ro_mount_failures"] = jail.make_host_read_only()
        facts["hidden"] = jail.hide_paths(job["hide"], job["keep"])
        jail.private_tmp(job["limits"]["disk_mb"])
        try:
            jail.private_proc()
            facts["private_proc"] = True
        except OSError:
            facts["private_proc"] = False
        os.makedirs(job["workdir"], mode=0o700)
        if job["mode"] == "namespaces":
            os.chown(job["workdir"], job["uid"], job["uid"])
    signal.signal(signal.SIGALRM, lambda *_: os._exit(128 + signal.SIGALRM))
    signal.alarm(int(job["limits"]["wall_time_s"]) + 2)  # a second clock, in case the parent is gone
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            worker(jail, job, record, facts)
        except BaseException as exc:
            try:
                record("setup", "error", type(exc).__name__ + ": " + str(exc))
            except BaseException:
                pass
            code = 3
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if job["mode"] == "setuid":  # no pid namespace: sweep up whatever the worker's uid left running
        killer = os.fork()
        if killer == 0:
            jail.drop_privileges(job["uid"], job["uid"])
            try:
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(killer, 0)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def main():
    job = json.loads(sys.stdin.buffer.read())
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    jail = _load_jail()
    jail.prctl(jail.PR_SET_PDEATHSIG, signal.SIGKILL)
    record = make_recorder(job.pop("fd"), job.pop("nonce"))
    flags = jail.CLONE_NEWNS | jail.CLONE_NEWPID | jail.CLONE_NEWIPC | jail.CLONE_NEWUTS
    if not job["limits"]["network"]:
        flags |= jail.CLONE_NEWNET
    try:
        if job["mode"] == "namespaces":
            jail.unshare(flags)
        elif job["mode"] == "userns":
            uid, gid = os.getuid(), os.getgid()
            jail.unshare(jail.CLONE_NEWUSER | flags)
            jail.map_user_namespace(uid, gid)
    except OSError as exc:
        record("setup", "error", str(exc))
        os._exit(3)
    pid = os.fork()
    if pid == 0:
        try:
            supervisor(jail, job, record)
        except BaseException as exc:
            try:
                record("setup", "error", type(exc).__name__ + ": " + str(exc))
            finally:
                os._exit(3)
    _, status = os.waitpid(pid, 0)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


if __name__ == "__main__":
    main()
