"""Kernel mechanisms that fence the child in: namespaces, mounts, uid drop, rlimits, seccomp.

Runs inside the sandbox child before any untrusted code, loaded by path from harness.py,
so it uses the standard library only (no thinkrl imports). Linux only; every function
raises OSError when the kernel refuses, and the caller decides whether that is fatal.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import struct

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
_OPTION_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
}

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), f"mount {target}")


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl {option}")


def map_user_namespace(uid: int, gid: int) -> None:
    """Inside a fresh user namespace, become root there while staying `uid` on the host."""
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def _mounts() -> list[tuple[str, int]]:
    """(mount point, flags to keep) for every mount, parents before children."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            flags = 0
            for option in fields[5].split(","):
                flags |= _OPTION_FLAGS.get(option, 0)
            found.append((point, flags))
    return sorted(found, key=lambda item: item[0].count("/"))


def make_host_read_only() -> int:
    """Remount every mount read-only in this (private) mount namespace; returns how many failed."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    failures = 0
    for point, flags in _mounts():
        try:
            mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except OSError:
            failures += 1  # a mount hidden under another one, or /proc pieces: covered below
    return failures


def hide_paths(hide: list[str], keep: list[str]) -> list[str]:
    """Cover each path in `hide` with an empty read-only tmpfs, binding back the `keep` paths inside it.

    `keep` is what the interpreter needs (its prefix may live under /root). Returns the
    paths actually hidden.
    """
    hidden = []
    keep = [os.path.realpath(k) for k in keep]
    for path in (os.path.realpath(p) for p in hide):
        if path == "/" or not os.path.isdir(path):
            continue
        if any(path == k or path.startswith(k + "/") for k in keep):
            continue  # hiding it would hide what the interpreter needs
        inner = [k for k in keep if k.startswith(path + "/") and os.path.exists(k)]
        handles = [os.open(k, os.O_PATH) for k in inner]
        try:
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
            for k, fd in zip(inner, handles, strict=True):
                os.makedirs(k, mode=0o755, exist_ok=True)
                mount(f"/proc/self/fd/{fd}", k, None, MS_BIND | MS_REC)
                mount(None, k, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
            mount(None, path, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        finally:
            for fd in handles:
                os.close(fd)
        hidden.append(path)
    return hidden


def private_tmp(disk_mb: int) -> None:
    """Fresh, size-bounded /tmp and /dev/shm: what the program writes there dies with the sandbox."""
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={disk_mb}m,mode=1777")
    if os.path.isdir("/dev/shm"):
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=8m,mode=1777")


def private_proc() -> None:
    """A /proc that shows only the sandbox's own pid namespace."""
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def drop_capabilities() -> None:
    """Root inside a user namespace keeps capabilities there (it could undo the read-only
    remounts); clear the bounding set and every capability set so nothing can regain them."""
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:
            break  # EINVAL: past the last capability this kernel knows
    header = struct.pack("=Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = ctypes.create_string_buffer(24)  # two zeroed __user_cap_data_struct
    _check(_libc.capset(ctypes.create_string_buffer(header), data), "capset")


def apply_rlimits(limits: dict, nproc: int) -> None:
    """Lower (never raise) every resource limit; hard limits make them stick for the program."""
    cpu = max(1, int(-(-limits["cpu_time_s"] // 1)))
    memory = limits["memory_mb"] * 1024 * 1024
    wanted = {
        resource.RLIMIT_CPU: (cpu, cpu + 1),
        resource.RLIMIT_AS: (memory, memory),
        resource.RLIMIT_NPROC: (nproc, nproc),
        resource.RLIMIT_FSIZE: (limits["max_file_mb"] * 1024 * 1024,) * 2,
        resource.RLIMIT_NOFILE: (limits["max_open_files"],) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, (soft, hard) in wanted.items():
        _, old_hard = resource.getrlimit(which)
        if old_hard != resource.RLIM_INFINITY:
            hard = min(hard, old_hard)
            soft = min(soft, hard)
        resource.setrlimit(which, (soft, hard))


# Seccomp: refuse internet sockets and ptrace even where no network namespace could be made.
_SYSCALLS = {"x86_64": {"socket": 41, "ptrace": 101}, "aarch64": {"socket": 198, "ptrace": 117}}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x06
_RET_ALLOW, _RET_KILL, _RET_EPERM = 0x7FFF0000, 0x80000000, 0x00050000 | 1
_AF_BLOCKED = (2, 10, 17)  # AF_INET, AF_INET6, AF_PACKET


def _filter(machine: str, block_network: bool) -> list[tuple[int, int, int, int]]:
    calls, arch = _SYSCALLS[machine], _AUDIT_ARCH[machine]
    prog = [
        (_BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (_BPF_JEQ_K, 1, 0, arch),
        (_BPF_RET_K, 0, 0, _RET_KILL),  # any other ABI (x32, i386) could dodge the numbers below
        (_BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":
        prog += [(_BPF_JGE_K, 0, 1, 0x40000000), (_BPF_RET_K, 0, 0, _RET_KILL)]
    prog += [(_BPF_JEQ_K, 0, 1, calls["ptrace"]), (_BPF_RET_K, 0, 0, _RET_EPERM)]
    if block_network:
        prog += [(_BPF_JEQ_K, 0, 1 + 2 * len(_AF_BLOCKED), calls["socket"]), (_BPF_LD_W_ABS, 0, 0, 16)]  # args[0] low word
        for family in _AF_BLOCKED:
            prog += [(_BPF_JEQ_K, 0, 1, family), (_BPF_RET_K, 0, 0, _RET_EPERM)]
    prog.append((_BPF_RET_K, 0, 0, _RET_ALLOW))
    return prog


def install_seccomp(block_network: bool = True) -> None:
    """Needs no_new_privs (set here) and a known architecture; raises OSError otherwise."""
    machine = platform.machine()
    if machine not in _SYSCALLS:
        raise OSError(0, f"seccomp filter not written for {machine}")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    code = b"".join(struct.pack("=HBBI", *ins) for ins in _filter(machine, block_network))
    buf = ctypes.create_string_buffer(code)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(code) // 8, ctypes.addressof(buf))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0), "seccomp")
