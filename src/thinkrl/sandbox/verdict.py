"""Turn what came back from a sandboxed run into a SandboxResult.

Pure functions: the only evidence of a pass is an authenticated record on the result
channel, written by the tests' own interpreter (tester.py); stdout, stderr and the exit
code never count as one.
"""

from __future__ import annotations

import hmac
import signal
from dataclasses import dataclass, field

KINDS = {"ready", "program", "unit", "done", "setup", "channel"}


@dataclass
class Records:
    """The well-formed records of one run, or `tampered` when anything else was on the channel."""

    ready: str | None = None
    program: str | None = None
    program_reason: str = ""
    units: dict[int, tuple[str, str]] = field(default_factory=dict)
    done: int | None = None
    setup_error: str | None = None
    channel: str = ""  # how the calls to the program broke: "gone" or "malformed: ..."
    tampered: str = ""


def parse_records(data: bytes, nonce: str) -> Records:
    """Accept only lines `<nonce> <seq> <kind> ...` with seq = 0, 1, 2, ... in order."""
    out = Records()
    if data and not data.endswith(b"\n"):
        out.tampered = "an unterminated line on the result channel"
        return out
    key = nonce.encode("ascii")
    for seq, line in enumerate(data.splitlines()):
        parts = line.split(b" ")
        if len(parts) < 3 or not hmac.compare_digest(parts[0], key):
            out.tampered = "a record without the run's nonce"
            return out
        try:
            fields = [p.decode("ascii") for p in parts[1:]]
        except UnicodeDecodeError:
            out.tampered = "a non-ascii record"
            return out
        if fields[0] != str(seq) or fields[1] not in KINDS:
            out.tampered = "a record out of sequence or of unknown kind"
            return out
        kind, rest = fields[1], fields[2:]
        problem = _apply(out, kind, rest)
        if problem:
            out.tampered = problem
            return out
    return out


def _apply(out: Records, kind: str, rest: list[str]) -> str:
    if out.done is not None:
        return "a record after the final one"
    if kind == "ready":
        out.ready = " ".join(rest)
    elif kind == "setup":
        out.setup_error = " ".join(rest[1:]) or "unknown"
    elif kind == "channel":
        out.channel = out.channel or " ".join(rest)
    elif kind == "program":
        if out.program is not None or not rest:
            return "a second program record"
        out.program, out.program_reason = rest[0], " ".join(rest[1:])
    elif kind == "unit":
        if len(rest) < 2 or not rest[0].isdigit() or int(rest[0]) != len(out.units):
            return "a unit record out of order"
        out.units[int(rest[0])] = (rest[1], " ".join(rest[2:]))
    elif kind == "done":
        if not rest or not rest[0].isdigit():
            return "a malformed final record"
        out.done = int(rest[0])
    return ""


@dataclass(frozen=True)
class Exit:
    """How the sandbox process ended, as seen by the parent."""

    code: int | None
    timed_out: bool = False  # the wall clock, or the CPU time of the whole tree
    output_exceeded: bool = False
    out_of_memory: bool = False  # the run's cgroup killed a process for memory


_TIMEOUT_CODES = {128 + signal.SIGXCPU, 128 + signal.SIGALRM}


def decide(records: Records, total: int, ended: Exit) -> tuple[str, int, list[str], str]:
    """(status, passed, per-unit outcomes, detail) for one run; see limits.STATUSES."""
    if records.tampered:
        return "tampered", 0, ["missing"] * total, f"result channel tampered with: {records.tampered}"
    if records.setup_error is not None:
        return "error", 0, ["missing"] * total, f"sandbox setup failed: {records.setup_error}"
    if any(unit >= total for unit in records.units) or (records.done is not None and records.done != total):
        return "tampered", 0, ["missing"] * total, "result channel tampered with: unit count does not match the tests"
    outcomes = [records.units.get(i, ("missing", ""))[0] for i in range(total)]
    passed = outcomes.count("pass")
    failure = next((f"unit {i}: {why or kind}" for i, (kind, why) in sorted(records.units.items()) if kind != "pass"), "")
    if records.channel.startswith("malformed"):
        return "tampered", 0, ["missing"] * total, f"the program broke the call protocol: {records.channel}"
    if records.channel and passed < total:
        return _ended_early(records, passed, outcomes, total, ended)
    if records.done is not None:
        if records.program == "error":
            return "error", passed, outcomes, f"the program failed to load: {records.program_reason}"
        if records.program == "memory":
            return "memory", passed, outcomes, "the program ran out of memory while loading"
        if passed == total:
            return "passed", passed, outcomes, ""
        status = "memory" if "memory" in outcomes or ended.out_of_memory else "failed"
        return status, passed, outcomes, failure
    return _ended_early(records, passed, outcomes, total, ended)


def _ended_early(records: Records, passed: int, outcomes: list[str], total: int, ended: Exit) -> tuple[str, int, list[str], str]:
    """The program's process stopped answering: say why, from how the sandbox ended."""
    if ended.out_of_memory:
        return "memory", passed, outcomes, "the program's processes went over the memory limit"
    if ended.output_exceeded:
        return "output_limit", passed, outcomes, "output exceeded max_output_bytes"
    if ended.timed_out or ended.code in _TIMEOUT_CODES:
        return "timeout", passed, outcomes, "time limit exceeded"
    ran = sum(outcome != "missing" for outcome in outcomes) if records.channel else len(records.units)
    where = f"after {ran} of {total} test units" if records.program else "while loading the program"
    if ended.code is not None and ended.code >= 128:
        return "crashed", passed, outcomes, f"killed by signal {ended.code - 128} {where}"
    return "exited", passed, outcomes, f"the process exited (code {ended.code}) {where}"
