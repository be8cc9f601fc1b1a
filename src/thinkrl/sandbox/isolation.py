"""Pick the strongest isolation this machine allows, by trying it, and say what is active.

The modes, strongest first:

1. ``namespaces`` (running as root): new mount, pid, network, ipc and uts namespaces; the
   program's root filesystem is an empty read-only tmpfs holding only the interpreter and
   the system's shared libraries (read-only binds), a size-bounded /tmp and /dev/null,
   zero, urandom and a small shm; the worker drops to a fresh unprivileged uid with
   no_new_privs, seccomp and rlimits.
2. ``userns`` (not root, unprivileged user namespaces allowed): the same namespaces and
   root filesystem inside a new user namespace; the worker keeps the caller's host uid but
   loses every capability.
3. ``setuid`` (root, no namespaces): a fresh unprivileged uid, so file permissions protect
   the host and other processes; seccomp; leftovers of that uid are killed. The host's
   world-readable files are visible.
4. ``rlimits`` (last resort): limits, a private working directory, a scrubbed environment
   and seccomp only; as root it also drops to a fresh uid. Host files the caller can write
   are NOT protected, nor (without root) the caller's other processes; the calling process
   makes itself non-dumpable so the program cannot read its memory or environment.

Only the namespace modes are picked on their own. The other two run untrusted code with the
host's filesystem in view, so they need an explicit opt-in: `isolation="setuid"` or
`"rlimits"` (the code rewards' `isolation` option) or THINKRL_SANDBOX_MODE, and they warn
with what is not protected. Every mode has the same verdict (tests in their own
interpreter, tester.py), cgroup or per-process bounds (cgroup.py), wall-clock kill and
scrubbed environment.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import shutil
import sys
import tempfile

from thinkrl.errors import ThinkrlError
from thinkrl.sandbox.limits import SandboxLimits

MODES = ("namespaces", "userns", "setuid", "rlimits")
AUTOMATIC = ("namespaces", "userns")
_PROBE_LIMITS = SandboxLimits(wall_time_s=10.0)
log = logging.getLogger(__name__)

UNPROTECTED = {
    "setuid": "the host's world-readable files are visible to the program and its world-writable folders (/tmp, "
    "/dev/shm) writable (no mount namespace), and the network is refused by seccomp only",
    "rlimits": "host files the caller can write are writable by the program, the caller's other processes can be "
    "signalled, and the network is refused by seccomp only",
}


class SandboxUnavailable(ThinkrlError):
    """No isolation mode works on this machine, or only one that must be asked for by name."""


def candidate_modes() -> list[str]:
    """The automatic modes worth probing here, strongest first."""
    return (["namespaces"] if os.geteuid() == 0 else []) + ["userns"]


def probe(mode: str) -> dict:
    """Run the sandbox in `mode` with no program; return what it measured from inside, or the error."""
    from thinkrl.sandbox.runner import _WORKDIR_IN_NAMESPACE, NAMESPACE_MODES, build_job, launch

    probe_dir = tempfile.mkdtemp(prefix="thinkrl-probe-", dir="/var/tmp" if os.access("/var/tmp", os.W_OK) else None)
    os.chmod(probe_dir, 0o755)  # like most host folders: writable by its owner only
    try:
        workdir = _WORKDIR_IN_NAMESPACE if mode in NAMESPACE_MODES else ""
        raw = launch(build_job(mode, "", (), _PROBE_LIMITS, workdir, probe_dir), _PROBE_LIMITS, None)
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    facts = raw.facts or {"ok": False, "error": ""}
    if not facts["ok"] and not facts["error"]:
        facts["error"] = raw.stderr.decode(errors="replace").strip()[-300:] or f"exit code {raw.ended.code}"
    return facts


_TRIED: dict[str, str] = {}


def _requested(isolation: str | None) -> str | None:
    forced = isolation or os.environ.get("THINKRL_SANDBOX_MODE") or None
    if forced is not None and forced not in MODES:
        raise SandboxUnavailable(f"sandbox isolation {forced!r} is not one of {', '.join(MODES)}")
    return forced


def choose_mode(isolation: str | None = None) -> str:
    """`isolation` (or THINKRL_SANDBOX_MODE) when given, else the strongest automatic mode
    whose probe succeeds here (probed once per process)."""
    if platform.system() != "Linux":
        raise SandboxUnavailable(f"the code sandbox needs Linux (this is {platform.system()})")
    forced = _requested(isolation)
    if forced is not None:
        if forced not in AUTOMATIC:
            from thinkrl.sandbox.runner import drops_uid

            if os.geteuid() == 0 and not drops_uid(forced):
                raise SandboxUnavailable(f"{forced!r} isolation would run the program as root: the interpreter "
                                         f"({sys.base_prefix}) must be readable by other users for it to drop to a fresh uid")
            _warn_weak(forced)
        return forced
    return _automatic_mode()


@functools.cache
def _warn_weak(mode: str) -> None:
    log.warning("the code sandbox runs in %r mode, as asked: %s. Use a machine with namespaces (root, or "
                "unprivileged user namespaces) for untrusted code.", mode, UNPROTECTED[mode])


@functools.cache
def _automatic_mode() -> str:
    for mode in candidate_modes():
        result = probe(mode)
        _TRIED[mode] = "ok" if result["ok"] else f"unavailable: {result['error']}"
        if result["ok"]:
            return mode
    tried = "; ".join(f"{mode}: {why}" for mode, why in _TRIED.items())
    raise SandboxUnavailable(
        f"no namespace isolation works here ({tried}). Running untrusted code without it must be asked for: "
        "set THINKRL_SANDBOX_MODE=setuid (as root) or rlimits, or the code reward's `isolation` option, "
        f"knowing what is then not protected ({UNPROTECTED['rlimits']})"
    )


@functools.cache
def protect_caller(mode: str) -> None:
    """Where the program runs as our uid with our /proc in view (rlimits without root), make
    this process non-dumpable: its memory, fds and environment (keys, tokens) then need
    CAP_SYS_PTRACE to read."""
    from thinkrl.sandbox.runner import drops_uid

    if mode in MODES and mode not in AUTOMATIC and not drops_uid(mode):
        from thinkrl.sandbox.jail import set_dumpable

        set_dumpable(False)


def isolation_report(isolation: str | None = None) -> dict:
    """Which mechanisms are active for the mode in use, measured by a probe run (for logs and docs)."""
    from thinkrl.sandbox import cgroup
    from thinkrl.sandbox.runner import drops_uid, process_budget

    mode = choose_mode(isolation)
    facts = probe(mode)
    in_namespace = mode in AUTOMATIC
    bounded = cgroup.RunCgroup.available()
    processes, per_process = process_budget(SandboxLimits(), bounded)
    return {
        "mode": mode,
        "tried": dict(_TRIED) or {mode: "asked for"},
        "not_protected": UNPROTECTED.get(mode, "kernel exploits (see docs/sandbox.md)"),
        "kernel": platform.release(),
        "running_as_root": os.geteuid() == 0,
        "namespaces": ["user", "mount", "pid", "net", "ipc", "uts"][0 if mode == "userns" else 1 :] if in_namespace else [],
        "filesystem": (f"empty read-only root: {', '.join(facts.get('visible', []))}" if in_namespace
                       else "the host's, " + ("writable where the caller can write" if facts.get("host_writable", True) else "read-only")),
        "host_writable": bool(facts.get("host_writable", True)),
        "devices": facts.get("devices", []),
        "worker_uid": facts.get("uid"),
        "fresh_uid": drops_uid(mode),
        "caller_environ_readable": bool(facts.get("parent_environ_readable", True)),
        "network": "blocked" if not ({"inet", "inet6"} & set(facts.get("sockets", ["inet"]))) and facts.get("interfaces", []) in ([], ["lo"])
        else "open",
        "sockets": facts.get("sockets", []),
        "network_interfaces": facts.get("interfaces", []),
        "memfd": "refused" if not facts.get("memfd", True) else "allowed",
        "seccomp": "on: sockets AF_UNIX only, no ptrace/process_vm/memfd/shmget/io_uring/namespaces/mounts" if facts.get("seccomp") else "off",
        "whole_tree_limits": cgroup.describe(),
        "per_process_limits": {"processes": processes, "address_space_mb": per_process, "rlimits": [
            "RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE=0"]},
        "wall_clock": "SIGKILL to the process group and the cgroup" + (" and pid-namespace teardown" if in_namespace else ""),
        "environment": "scrubbed (PATH, HOME, TMPDIR, LANG only)",
        "verdict": "tests in their own interpreter (tester.py); the program answers calls with plain data only",
    }
