"""Pick the strongest isolation this machine allows, by trying it, and say what is active.

The fallback chain, strongest first:

1. ``namespaces`` (running as root): new mount, pid, network, ipc and uts namespaces; every
   host mount remounted read-only, a private size-bounded /tmp and /dev/shm, a private
   /proc, homes and the grader's checkout hidden under empty tmpfs; the worker then
   drops to a fresh unprivileged uid with no_new_privs, seccomp and rlimits.
2. ``userns`` (not root, unprivileged user namespaces allowed): the same namespaces and
   mounts inside a new user namespace; the worker keeps the caller's host uid but loses
   every capability, so it cannot undo the read-only mounts.
3. ``setuid`` (root, but no namespaces): a fresh unprivileged uid, so file permissions
   protect the host; seccomp refuses internet sockets; leftovers of that uid are killed.
4. ``rlimits`` (last resort): time, memory, process and file limits, a private working
   directory, a scrubbed environment and seccomp only. Host files the caller can write,
   the caller's other processes and (without seccomp) the network are NOT protected.

Set THINKRL_SANDBOX_MODE to force one. Every mode has the same verdict channel, rlimits,
wall-clock kill of the process group and scrubbed environment.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import sys
import tempfile

from thinkrl.errors import ThinkrlError
from thinkrl.sandbox.limits import SandboxLimits
from thinkrl.sandbox.verdict import parse_records

MODES = ("namespaces", "userns", "setuid", "rlimits")
_PROBE_LIMITS = SandboxLimits(wall_time_s=10.0)


class SandboxUnavailable(ThinkrlError):
    """No isolation mode works on this machine (the sandbox needs Linux)."""


def _readable_by_others(path: str) -> bool:
    """True when every folder down to `path` lets any uid through (needed by the setuid mode)."""
    path = os.path.realpath(path)
    while True:
        if not os.stat(path).st_mode & 0o005:
            return False
        if path == "/":
            return True
        path = os.path.dirname(path)


def candidate_modes() -> list[str]:
    root = os.geteuid() == 0
    modes = ["namespaces"] if root else []
    modes.append("userns")
    if root and _readable_by_others(sys.base_prefix):
        modes.append("setuid")
    modes.append("rlimits")
    return modes


def probe(mode: str) -> dict:
    """Run the harness in `mode` with no program; return what it measured from inside, or the error."""
    from thinkrl.sandbox.runner import (
        _WORKDIR_IN_NAMESPACE,
        NAMESPACE_MODES,
        build_job,
        launch,
    )

    probe_dir = tempfile.mkdtemp(prefix="thinkrl-probe-", dir="/var/tmp" if os.access("/var/tmp", os.W_OK) else None)
    os.chmod(probe_dir, 0o755)  # like most host folders: writable by its owner only
    try:
        workdir = _WORKDIR_IN_NAMESPACE if mode in NAMESPACE_MODES else ""
        raw = launch(build_job(mode, None, "", _PROBE_LIMITS, workdir, probe_dir), _PROBE_LIMITS)
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    records = parse_records(raw.results, raw.nonce)
    if records.ready is None:
        why = records.setup_error or records.tampered or raw.stderr.decode(errors="replace").strip()[-300:] or f"exit code {raw.ended.code}"
        return {"ok": False, "error": why}
    import json

    return {"ok": True, **json.loads(records.ready)}


_TRIED: dict[str, str] = {}


@functools.cache
def choose_mode() -> str:
    """The first mode of the fallback chain whose probe succeeds (cached per process)."""
    if platform.system() != "Linux":
        raise SandboxUnavailable(f"the code sandbox needs Linux (this is {platform.system()})")
    forced = os.environ.get("THINKRL_SANDBOX_MODE")
    if forced:
        if forced not in MODES:
            raise SandboxUnavailable(f"THINKRL_SANDBOX_MODE={forced!r} is not one of {', '.join(MODES)}")
        return forced
    for mode in candidate_modes():
        result = probe(mode)
        _TRIED[mode] = "ok" if result["ok"] else f"unavailable: {result['error']}"
        if result["ok"]:
            return mode
    raise SandboxUnavailable("no sandbox isolation mode works here, not even plain rlimits")


def isolation_report() -> dict:
    """Which mechanisms are active for the mode in use, measured by a probe run (for logs and docs)."""
    mode = choose_mode()
    facts = probe(mode)
    in_namespace = mode in ("namespaces", "userns")
    return {
        "mode": mode,
        "tried": dict(_TRIED) or {mode: "forced by THINKRL_SANDBOX_MODE"},
        "kernel": platform.release(),
        "running_as_root": os.geteuid() == 0,
        "namespaces": ["user", "mount", "pid", "net", "ipc", "uts"][0 if mode == "userns" else 1 :] if in_namespace else [],
        "host_filesystem": "read-only" if not facts.get("host_writable", True) else "writable",
        "private_tmp": in_namespace,
        "private_proc": bool(facts.get("private_proc")),
        "hidden_paths": facts.get("hidden", []),
        "worker_uid": facts.get("uid"),
        "worker_pid": facts.get("pid"),
        "network": "blocked" if not facts.get("inet_socket", True) or facts.get("interfaces") == ["lo"] else "open",
        "network_interfaces": facts.get("interfaces", []),
        "seccomp": "socket(AF_INET/AF_INET6/AF_PACKET) and ptrace refused" if facts.get("seccomp") else "off",
        "rlimits": ["RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE=0"],
        "wall_clock": "SIGKILL to the process group" + (" and pid-namespace teardown" if in_namespace else ""),
        "environment": "scrubbed (PATH, HOME, TMPDIR, LANG only)",
        "verdict_channel": "nonce-authenticated numbered records on a private pipe",
    }
