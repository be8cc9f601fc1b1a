"""One cgroup per sandboxed run: memory, processes and CPU bounded for the program's whole tree.

Per-process rlimits let a program that forks N times use N times the memory, and memory a
program maps from memfd or shared memory escapes RLIMIT_AS altogether; a cgroup charges
all of it (page cache and shmem included) to the run. cgroup v2 is used where this
process's cgroup can have children with the memory and pids controllers, otherwise the
v1 memory, pids and cpu/cpuacct hierarchies; where neither is writable (not root, no
delegation) `RunCgroup.create` returns None and the caller falls back to per-process
limits (see runner.py).
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

_COUNTER = itertools.count()
_CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Layout:
    """Where this process's cgroups are: one folder (v2) or one per v1 controller."""

    version: int
    folders: dict[str, Path] = field(default_factory=dict)  # controller -> this process's cgroup


def _mountinfo() -> list[tuple[str, str, str, str]]:
    """(mount point, root inside the hierarchy, fstype, super options) of each cgroup mount."""
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if tail and tail[0] in ("cgroup", "cgroup2"):
                found.append((fields[4], fields[3], tail[0], tail[2] if len(tail) > 2 else ""))
    return found


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    own = {}
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                own[controller] = path
    return own


def _inside(mount: str, root: str, path: str) -> Path:
    relative = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
    return Path(mount) / ("" if relative == "." else relative)


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK)


@functools.cache
def layout() -> Layout | None:
    """The cgroups this process may create children in, or None."""
    try:
        mounts, own = _mountinfo(), _own_cgroups()
    except OSError:
        return None
    for point, root, fstype, _ in mounts:
        if fstype == "cgroup2" and "" in own:
            folder = _inside(point, root, own[""])
            if _writable(folder) and _v2_ready(folder):
                return _swept(Layout(2, {"": folder}))
    folders = {}
    for point, root, fstype, options in mounts:
        if fstype != "cgroup":
            continue
        for controller in ("memory", "pids", "cpu", "cpuacct"):
            if controller in options.split(",") and controller in own:
                folder = _inside(point, root, own[controller])
                if _writable(folder):
                    folders[controller] = folder
    if "memory" in folders and "pids" in folders:
        return _swept(Layout(1, folders))
    return None


def _swept(found: Layout) -> Layout:
    """Remove the empty cgroups of runs whose process died without cleaning up (SIGKILL)."""
    for parent in set(found.folders.values()):
        for stale in parent.glob("thinkrl-sandbox-*"):
            pid = stale.name.split("-")[2]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                try:
                    stale.rmdir()
                except OSError:
                    pass
    return found


def _v2_ready(folder: Path) -> bool:
    """Children of `folder` get memory and pids, enabling them if we may (the root cgroup, a
    delegated one without processes of its own)."""
    wanted = {"memory", "pids", "cpu"}
    try:
        enabled = set((folder / "cgroup.subtree_control").read_text().split())
        if {"memory", "pids"} <= enabled:
            return True
        available = set((folder / "cgroup.controllers").read_text().split())
        missing = (wanted & available) - enabled
        (folder / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(missing)))
        return {"memory", "pids"} <= set((folder / "cgroup.subtree_control").read_text().split())
    except OSError:
        return False


class RunCgroup:
    """The cgroup(s) of one run: made with limits, filled with the run's first process,
    read for CPU time and OOM kills while it runs, emptied and removed afterwards."""

    def __init__(self, layout: Layout, folders: dict[str, Path]) -> None:
        self.layout, self.folders = layout, folders

    @staticmethod
    def available() -> bool:
        return layout() is not None

    @classmethod
    def create(cls, memory_mb: int, max_processes: int, cpus: float = 1.0) -> RunCgroup | None:
        found = layout()
        if found is None:
            return None
        name = f"thinkrl-sandbox-{os.getpid()}-{next(_COUNTER)}"
        made: dict[str, Path] = {}
        try:
            for controller, parent in found.folders.items():
                if any(folder == parent / name for folder in made.values()):
                    continue  # v1 controllers co-mounted in one hierarchy share a folder
                (parent / name).mkdir()
                made[controller] = parent / name
            for controller, parent in found.folders.items():
                made.setdefault(controller, parent / name)
            group = cls(found, made)
            group._limit(memory_mb * 1024 * 1024, max_processes, cpus)
            return group
        except OSError:
            cls(found, made).remove()
            return None

    def _write(self, controller: str, name: str, value: str, required: bool = True) -> None:
        path = self.folders[controller] / name
        if not required and not path.exists():
            return
        path.write_text(value)

    def _limit(self, memory: int, pids: int, cpus: float) -> None:
        quota = max(1000, int(cpus * _CPU_PERIOD_US))
        if self.layout.version == 2:
            self._write("", "memory.max", str(memory))
            self._write("", "memory.swap.max", "0", required=False)
            self._write("", "pids.max", str(pids))
            self._write("", "cpu.max", f"{quota} {_CPU_PERIOD_US}", required=False)
            return
        self._write("memory", "memory.limit_in_bytes", str(memory))
        self._write("memory", "memory.memsw.limit_in_bytes", str(memory), required=False)  # no escape into swap
        self._write("pids", "pids.max", str(pids))
        if "cpu" in self.folders:
            self._write("cpu", "cpu.cfs_period_us", str(_CPU_PERIOD_US), required=False)
            self._write("cpu", "cpu.cfs_quota_us", str(quota), required=False)

    def add(self, pid: int) -> None:
        """Move `pid` in (before it forks: its children inherit the cgroup)."""
        for folder in dict.fromkeys(self.folders.values()):
            (folder / "cgroup.procs").write_text(str(pid))

    def cpu_seconds(self) -> float:
        """CPU time used by every process of the run so far."""
        try:
            if self.layout.version == 2:
                for line in (self.folders[""] / "cpu.stat").read_text().splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
            elif "cpuacct" in self.folders:
                return int((self.folders["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            pass
        return 0.0

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the run for going over the memory limit."""
        try:
            if self.layout.version == 2:
                text = (self.folders[""] / "memory.events").read_text()
                key = "oom_kill"
            else:
                text = (self.folders["memory"] / "memory.oom_control").read_text()
                key = "oom_kill"
            for line in text.splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value) > 0
        except (OSError, ValueError):
            pass
        return False

    def kill(self) -> None:
        """SIGKILL every process of the run, wherever it went (new session, new process group)."""
        if self.layout.version == 2 and (self.folders[""] / "cgroup.kill").exists():
            try:
                (self.folders[""] / "cgroup.kill").write_text("1")
                return
            except OSError:
                pass
        for folder in dict.fromkeys(self.folders.values()):
            for pid in self._pids(folder):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    @staticmethod
    def _pids(folder: Path) -> list[int]:
        try:
            return [int(p) for p in (folder / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def remove(self, timeout_s: float = 2.0) -> None:
        """Kill what is left and remove the folders (a cgroup goes once its last process is reaped)."""
        deadline = time.monotonic() + timeout_s
        for folder in dict.fromkeys(self.folders.values()):
            while folder.exists():
                try:
                    folder.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    self.kill()
                    time.sleep(0.005)


def describe() -> str:
    """How the whole program's tree is bounded here, for isolation_report."""
    found = layout()
    if found is None:
        return "none: per-process limits only (see memory_per_process_mb)"
    if found.version == 2:
        return "cgroup v2: memory.max (+ swap 0), pids.max, cpu.max, CPU time polled from cpu.stat"
    cpu = " cpu.cfs_quota_us, CPU time polled from cpuacct.usage," if "cpuacct" in found.folders else ""
    return f"cgroup v1: memory.limit_in_bytes (+ memsw), pids.max,{cpu} per run"
