"""The sandbox: fence itself in, run the untrusted program, then answer the tests' calls.

Started by runner.py as `python -I -S -B harness.py` with the job (the program, the names
the tests may call, the limits, the mode) as JSON on stdin. Standard library only. The
tests are not in the job: they run in tester.py, another process this one cannot reach.

Process tree (namespace modes):

    harness (outside the pid namespace; waits, relays the exit status)
      └─ supervisor (pid 1 of a new pid namespace, root there: builds the empty root
         │           filesystem, never runs untrusted code; when it exits the kernel kills
         │           the whole namespace)
         └─ worker (unprivileged, rlimited, seccomp: runs the program, serves the calls)

Call protocol (wire.py), one line each way: the tester sends `["call", name, args,
kwargs]`, the worker answers `["ok", value]`, `["raise", type name, message]` or
`["error", why]`. What the worker sends is only ever parsed as plain data by the tester,
so a program that rewrites this file's code in its own memory can send wrong answers,
which it could have returned anyway, and nothing else.
"""

import importlib.util
import json
import os
import signal
import sys


def _load(name):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
    spec = importlib.util.spec_from_file_location("thinkrl_sandbox_" + name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _send(fd, message, wire):
    data = wire.dump_message(message)
    while data:
        data = data[os.write(fd, data) :]


def _read_lines(fd):
    """The tester's requests, one line at a time, until it closes its end."""
    buffer = b""
    while True:
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        buffer += chunk


def _reply(ns, request, wire):
    """Run one call of the program and say what came of it, as plain data only."""
    try:
        _, name, args, kwargs = request
        function, args, kwargs = ns.get(name), wire.decode(args), wire.decode(kwargs)
    except Exception:  # noqa: BLE001 - the tester sent it; a broken request is answered, never fatal
        return ["error", "a malformed request"]
    try:
        value = function(*args, **kwargs)
    except MemoryError:
        return ["raise", "MemoryError", ""]
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: it is the program's answer
        try:
            return ["raise", str(type(exc).__name__)[:100], str(exc)[:500]]
        except BaseException:  # noqa: BLE001 - an exception whose str() raises
            return ["raise", "Exception", ""]
    try:
        return ["ok", wire.encode(value)]
    except wire.WireError as exc:
        return ["error", f"{name}() returned something that is not plain data ({exc})"]
    except BaseException:  # noqa: BLE001 - a value whose traversal raises (RecursionError, ...)
        return ["error", f"{name}() returned something that is not plain data"]


def _flush():
    """The program's output reaches the parent before the answer it goes with: once the
    tester is done, the parent kills the sandbox without waiting."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - a program that closed or replaced its streams
            pass


def serve(job, wire):
    """Execute the program, report what it defines, then answer calls until the tester is done."""
    reply_fd, call_fd = job["reply_fd"], job["call_fd"]
    module = type(sys)("__solution__")  # a real module: multiprocessing pickles its functions by name
    sys.modules["__solution__"] = module
    ns = module.__dict__
    try:
        exec(compile(job["program"], "<program>", "exec"), ns)
        outcome, why = "ok", ""
    except MemoryError:
        outcome, why = "memory", "MemoryError"
    except BaseException as exc:  # noqa: BLE001 - SystemExit and all: the program failed to load
        outcome, why = "error", type(exc).__name__
    sys.settrace(None)
    sys.setprofile(None)
    defined = [name for name in job["exposed"] if callable(ns.get(name))]
    _flush()
    _send(reply_fd, ["loaded", outcome, str(why)[:100], defined], wire)
    for line in _read_lines(call_fd):
        try:
            request = wire.load_message(line, job["max_value_bytes"])
        except wire.WireError:
            request = ["malformed"]
        if request[0] == "exit":
            break
        reply = _reply(ns, request, wire) if request[0] == "call" else ["error", "unknown request"]
        _flush()
        _send(reply_fd, reply, wire)


def probe_facts(job):
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
    families = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "netlink": socket.AF_NETLINK, "unix": socket.AF_UNIX}
    families["vsock"] = getattr(socket, "AF_VSOCK", 40)
    facts["sockets"] = []
    for name, family in families.items():
        try:
            socket.socket(family, socket.SOCK_DGRAM if name != "inet" else socket.SOCK_STREAM).close()
            facts["sockets"].append(name)
        except OSError:
            pass
    try:
        facts["interfaces"] = [name for _, name in socket.if_nameindex()]
    except OSError:
        facts["interfaces"] = []
    facts["visible"] = sorted(entry for entry in os.listdir("/") if not entry.startswith("."))
    facts["devices"] = sorted(os.listdir("/dev")) if os.path.isdir("/dev") else []
    try:
        os.close(os.memfd_create("probe"))
        facts["memfd"] = True
    except (OSError, AttributeError):
        facts["memfd"] = False
    try:
        with open(f"/proc/{job['parent_pid']}/environ", "rb"):
            facts["parent_environ_readable"] = True
    except OSError:
        facts["parent_environ_readable"] = False
    return facts


def worker(jail, job, wire, facts):
    os.chdir(job["workdir"])
    if job["uid"] != os.getuid():
        jail.drop_privileges(job["uid"], job["uid"])
    elif job["mode"] == "userns":
        jail.drop_capabilities()
    jail.apply_rlimits(job["limits"], job["nproc"], job["memory_per_process_mb"])
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
        facts.update(probe_facts(job))
        _send(job["reply_fd"], ["facts", json.dumps(facts)], wire)
        return
    try:
        serve(job, wire)
    except BaseException:  # noqa: BLE001 - the program broke the server (closed fds...): its calls fail
        os._exit(4)


def _setup_error(job, wire, exc):
    try:
        _send(job["reply_fd"], ["setup-error", f"{type(exc).__name__}: {exc}"], wire)
    except BaseException:  # noqa: BLE001 - nothing more to say
        pass


def supervisor(jail, job, wire):
    """Pid 1 of the sandbox in namespace modes: build the filesystem, then watch the worker."""
    facts = {"mode": job["mode"]}
    jail.prctl(jail.PR_SET_PDEATHSIG, signal.SIGKILL)
    if job["mode"] in ("namespaces", "userns"):
        facts["root"] = jail.empty_root(job["keep"], job["limits"]["disk_mb"], job["workdir"])
        if job["mode"] == "namespaces":
            os.chown(job["workdir"], job["uid"], job["uid"])
    signal.signal(signal.SIGALRM, lambda *_: os._exit(128 + signal.SIGALRM))
    signal.alarm(int(job["limits"]["wall_time_s"]) + 2)  # a second clock, in case the parent is gone
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            worker(jail, job, wire, facts)
        except BaseException as exc:  # noqa: BLE001 - reported to the tester, which fails every unit
            _setup_error(job, wire, exc)
            code = 3
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if job["uid"] != os.getuid() and job["mode"] not in ("namespaces", "userns"):  # no pid namespace: sweep up the uid
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
    jail, wire = _load("jail"), _load("wire")
    jail.prctl(jail.PR_SET_PDEATHSIG, signal.SIGKILL)
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
        _setup_error(job, wire, exc)
        os._exit(3)
    pid = os.fork()
    if pid == 0:
        try:
            supervisor(jail, job, wire)
        except BaseException as exc:  # noqa: BLE001 - reported to the tester, which fails every unit
            _setup_error(job, wire, exc)
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


if __name__ == "__main__":
    main()
