"""The tests' interpreter: runs the test code and writes the verdict; never runs the program.

Started by runner.py as `python -I -S -B tester.py`, beside the sandbox (harness.py), with
the test plan on stdin. Standard library only. The program lives in another process, in
the sandbox; each function the tests may call (the plan's `exposed` names, nothing else)
is a `ProgramFunction` here, whose call crosses over as a request and comes back as plain
data (wire.py) or as an exception of a builtin type. So nothing the program does to its
own interpreter (frames, gc, builtins, sys.modules, memory, threads, objects with a forged
`__eq__`) reaches this one: the tests' names, builtins and modules are this process's own,
and only this process holds the verdict channel.

Verdict channel: `<nonce> <seq> <kind> ...` lines on a private pipe to the parent, read by
verdict.py; a unit counts as passed only from a "unit i pass" record, written after the
unit ran here without an exception.
"""

import builtins
import importlib.util
import json
import os
import sys


def _load_wire():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wire.py")
    spec = importlib.util.spec_from_file_location("thinkrl_sandbox_wire", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wire = _load_wire()


def make_recorder(fd, nonce):
    """Writes authenticated, numbered records, with only safe characters in each field."""
    allowed = frozenset(b'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:,{}"[]-=/ ')
    key = nonce.encode("ascii")
    state = [0]

    def record(kind, *fields):
        parts = []
        for value in fields:
            raw = (value if type(value) is str else repr(value)).encode("ascii", "replace")[:2000]
            parts.append(bytes(b for b in raw if b in allowed) or b"-")
        os.write(fd, b" ".join([key, b"%d" % state[0], kind.encode("ascii")] + parts) + b"\n")
        state[0] += 1

    return record


class ProgramError(Exception):
    """The program raised an exception that is not one of Python's builtin ones."""


class Refused(BaseException):
    """A call that could not be answered honestly: the program's process ended, broke the
    protocol, or returned something that is not plain data. A BaseException, and counted
    by the channel, so a unit fails even when its code catches everything."""


class ProgramGone(Refused):
    """The program's process ended, or broke the call protocol: no call can be answered."""


class Channel:
    """Requests to the program's process and its replies: one line each way per call."""

    def __init__(self, out_fd, in_fd, max_bytes):
        self.out_fd, self.in_fd, self.max_bytes = out_fd, in_fd, max_bytes
        self.buffer = b""
        self.broken = ""  # "gone" or "malformed: ...", once and for all
        self.refusals = 0

    def refuse(self, exc):
        self.refusals += 1
        raise exc

    def send(self, message):
        if self.broken:
            self.refuse(ProgramGone(self.broken))
        data = wire.dump_message(message)
        try:
            while data:
                data = data[os.write(self.out_fd, data) :]
        except OSError:
            self.fail("gone")

    def receive(self):
        if self.broken:
            self.refuse(ProgramGone(self.broken))
        while b"\n" not in self.buffer:
            if len(self.buffer) > self.max_bytes:
                self.fail("malformed: a reply over the size limit")
            try:
                chunk = os.read(self.in_fd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self.fail("gone")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            return wire.load_message(line, self.max_bytes)
        except wire.WireError as exc:
            self.fail(f"malformed: {exc}")

    def fail(self, why):
        self.broken = self.broken or why
        self.refuse(ProgramGone(self.broken))


def _builtin_exception(name, message):
    """The builtin exception class of that name, so tests may catch what the program raised."""
    cls = getattr(builtins, name, None) if type(name) is str else None
    # Not StopIteration: raised inside map() or a hand-written iterator it would end the
    # test's loop early, and `all(map(check, cases))` would hold for no case at all.
    if not (isinstance(cls, type) and issubclass(cls, Exception)) or issubclass(cls, (StopIteration, StopAsyncIteration)):
        return ProgramError(f"{name}: {message}")
    try:
        return cls(message)
    except Exception:  # noqa: BLE001 - classes that need other arguments (UnicodeDecodeError, ...)
        return ProgramError(f"{name}: {message}")


class ProgramFunction:
    """Stands in for one of the program's functions: a call is a request to its process."""

    __slots__ = ("__name__", "_channel")

    def __init__(self, channel, name):
        self._channel, self.__name__ = channel, name

    def __call__(self, *args, **kwargs):
        try:
            request = ["call", self.__name__, wire.encode(list(args)), wire.encode(kwargs)]
        except wire.WireError as exc:
            raise TypeError(f"the tests passed {self.__name__}() an argument that is not plain data ({exc})") from None
        self._channel.send(request)
        reply = self._channel.receive()
        kind = reply[0]
        if kind == "ok" and len(reply) == 2:
            try:
                return wire.decode(reply[1])
            except wire.WireError as exc:
                self._channel.fail(f"malformed: {exc}")
        if kind == "raise" and len(reply) == 3 and all(type(part) is str for part in reply[1:]):
            raise _builtin_exception(reply[1], reply[2][:500])
        if kind == "error" and len(reply) == 2 and type(reply[1]) is str:
            self._channel.refuse(Refused(reply[1][:500]))  # it returned something that is not plain data
        self._channel.fail("malformed: an unknown reply")

    def __repr__(self):
        return f"<program function {self.__name__}>"


class MissingFunction:
    """An exposed name the program does not define (as a function): every use fails."""

    __slots__ = ("__name__",)

    def __init__(self, name):
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        raise NameError(f"the program defines no function {self.__name__!r}")


def reason(exc):
    return type(exc).__name__


def run_tests(job, channel, record):
    """Wait for the program to load, then run every step of the plan here; record each unit."""
    try:
        loaded = channel.receive()
    except ProgramGone:
        record("channel", channel.broken)
        record("done", sum(1 for s in job["steps"] if s["is_unit"]))
        return
    if loaded[0] == "setup-error":
        record("setup", "error", str(loaded[1:])[:300])
        return
    if loaded[0] != "loaded" or len(loaded) != 4 or type(loaded[3]) is not list:
        channel.broken = "malformed: no load report"
        loaded = ["loaded", "error", "protocol", []]
    record("program", str(loaded[1]), str(loaded[2]))
    defined = {name for name in loaded[3] if type(name) is str}

    ns = {"__name__": "__tests__", "__builtins__": builtins}
    try:
        exec(compile(job["prelude"], "<prelude>", "exec"), ns)
    except BaseException:  # noqa: BLE001 - trusted helpers that do not run: the units that need them fail
        pass
    for name in job["exposed"]:
        ns[name] = ProgramFunction(channel, name) if name in defined else MissingFunction(name)
    try:
        exec(compile(job["setup"], "<tests>", "exec"), ns)
    except BaseException:  # noqa: BLE001 - the units that need the setup fail on their own
        pass
    candidate = None
    if job["candidate_expr"]:
        try:
            candidate = eval(job["candidate_expr"], ns)
        except BaseException:  # noqa: BLE001
            candidate = None
    unit = 0
    for step in job["steps"]:
        if job["candidate_name"] and candidate is not None:
            ns[job["candidate_name"]] = candidate
        refusals, broken = channel.refusals, channel.broken
        try:
            exec(compile(step["source"], "<test unit>", "exec"), ns)
            outcome, why = "pass", ""
        except MemoryError:
            outcome, why = "memory", "MemoryError"
        except BaseException as exc:  # noqa: BLE001 - a failing unit, whatever it raised
            outcome, why = "fail", reason(exc)
        if channel.refusals != refusals:  # even if the unit's code caught it
            outcome, why = "fail", "Refused" if channel.broken == broken else "ProgramGone"
        if channel.broken and not broken:
            record("channel", channel.broken)
        if step["is_unit"]:
            record("unit", unit, outcome, why)
            unit += 1
    record("done", unit)


def main():
    job = json.loads(sys.stdin.buffer.read())
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    if job["undumpable"]:  # the program runs as our uid: keep it out of /proc/<this pid>
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0
    record = make_recorder(job["result_fd"], job["nonce"])
    record("ready")
    channel = Channel(job["call_fd"], job["reply_fd"], job["max_value_bytes"])
    run_tests(job, channel, record)
    try:
        channel.send(["exit"])
    except ProgramGone:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
