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
PR_SET_DUMPABLE = 4
MNT_DETACH = 2
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


def _flags_for(path: str, mounts: list[tuple[str, int]]) -> int:
    """The flags of the mount holding `path`: a bind inside a user namespace must keep them."""
    best, flags = "", 0
    for point, point_flags in mounts:
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, flags = point, point_flags
    return flags


def _syscall(number: dict[str, int], *args: object) -> int:
    return _libc.syscall(number[platform.machine()], *args)


_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}


def empty_root(keep: list[list[str]], disk_mb: int, workdir: str) -> list[str]:
    """Make / an empty read-only tmpfs that holds only `keep` ([path, host source] pairs,
    bound read-only: the interpreter and its libraries), a size-bounded /tmp holding
    `workdir`, and /dev with null, zero, urandom and a small shm. Returns the paths kept."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mounts = _mounts()
    sources = [(target, os.path.realpath(source)) for target, source in keep if os.path.exists(source)]
    handles = [os.open(source, os.O_PATH) for _, source in sources]  # still reachable once /tmp is covered
    new = "/tmp"
    try:
        mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
        for (target, source), fd in zip(sources, handles, strict=True):
            where = new + target
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.makedirs(where, mode=0o755, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(where), mode=0o755, exist_ok=True)
                open(where, "a").close()
            mount(f"/proc/self/fd/{fd}", where, None, MS_BIND | MS_REC)
            mount(None, where, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | _flags_for(source, mounts))
    finally:
        for fd in handles:
            os.close(fd)
    os.makedirs(new + "/dev/shm", mode=0o755)
    for device in ("null", "zero", "urandom"):
        open(f"{new}/dev/{device}", "a").close()
        mount(f"/dev/{device}", f"{new}/dev/{device}", None, MS_BIND)
    mount("tmpfs", new + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=8m,mode=1777")
    os.makedirs(new + "/tmp", mode=0o755)
    mount("tmpfs", new + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={disk_mb}m,mode=1777")
    os.makedirs(new + workdir, mode=0o700)
    mount(None, new, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    os.chdir(new)
    _check(_syscall(_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount the host's root")
    os.chdir("/")
    return sorted({target for target, _ in sources})


def set_dumpable(dumpable: bool) -> None:
    """A process that is not dumpable keeps its memory, fds and environ out of /proc for its uid."""
    prctl(PR_SET_DUMPABLE, int(dumpable))


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


def apply_rlimits(limits: dict, nproc: int, memory_mb: int) -> None:
    """Lower (never raise) every resource limit; hard limits make them stick for the program.
    `memory_mb` is each process's address space (the run's share where no cgroup bounds the tree)."""
    cpu = max(1, int(-(-limits["cpu_time_s"] // 1)))
    memory = memory_mb * 1024 * 1024
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


# Seccomp. Sockets: AF_UNIX only (AF_INET/AF_INET6 too when the run allows the network),
# so no netlink, vsock, packet or bluetooth socket, with or without a network namespace.
# Refused outright: tracing and reading other processes (ptrace, process_vm_*,
# pidfd_getfd), memory outside RLIMIT_AS (memfd_create, memfd_secret, SysV shmget),
# io_uring (its ops bypass this filter), new namespaces (unshare, setns, clone with CLONE_NEW*;
# clone3 answers ENOSYS so libc falls back to clone), mounts, chroot, modules, kexec,
# bpf, perf, userfaultfd, keyrings, handles to host files by inode.
_NR = {
    "x86_64": {
        "socket": 41, "socketpair": 53, "clone": 56, "clone3": 435,
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_getfd": 438, "process_madvise": 440,
        "memfd_create": 319, "memfd_secret": 447, "shmget": 29,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "kexec_load": 246, "init_module": 175, "finit_module": 313, "delete_module": 176, "swapon": 167, "reboot": 169,
        "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "keyctl": 250, "add_key": 248, "request_key": 249,
        "name_to_handle_at": 303, "open_by_handle_at": 304,
    },
    "aarch64": {
        "socket": 198, "socketpair": 199, "clone": 220, "clone3": 435,
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "pidfd_getfd": 438, "process_madvise": 440,
        "memfd_create": 279, "memfd_secret": 447, "shmget": 194,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "kexec_load": 104, "init_module": 105, "finit_module": 273, "delete_module": 106, "swapon": 224, "reboot": 142,
        "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "keyctl": 219, "add_key": 217, "request_key": 218,
        "name_to_handle_at": 264, "open_by_handle_at": 265,
    },
}
_SOCKET_CALLS = ("socket", "socketpair")
_ENOSYS_CALLS = ("clone3",)
_REFUSED_CALLS = tuple(name for name in _NR["x86_64"] if name not in (*_SOCKET_CALLS, *_ENOSYS_CALLS, "clone"))
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_JSET_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW, _RET_KILL = 0x7FFF0000, 0x80000000
_EPERM, _ENOSYS, _EAFNOSUPPORT = 1, 38, 97
_AF_UNIX, _AF_INET, _AF_INET6 = 1, 2, 10
_CLONE_NEW_ANY = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
_ARG0 = 16  # seccomp_data.args[0], low word (little-endian)


def _errno(code: int) -> int:
    return 0x00050000 | code


def _filter(machine: str, allow_network: bool) -> list[tuple[int, int, int, int]]:
    calls, arch = _NR[machine], _AUDIT_ARCH[machine]
    prog = [
        (_BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (_BPF_JEQ_K, 1, 0, arch),
        (_BPF_RET_K, 0, 0, _RET_KILL),  # any other ABI (x32, i386) could dodge the numbers below
        (_BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":
        prog += [(_BPF_JGE_K, 0, 1, 0x40000000), (_BPF_RET_K, 0, 0, _RET_KILL)]
    for name in _REFUSED_CALLS:
        prog += [(_BPF_JEQ_K, 0, 1, calls[name]), (_BPF_RET_K, 0, 0, _errno(_EPERM))]
    for name in _ENOSYS_CALLS:
        prog += [(_BPF_JEQ_K, 0, 1, calls[name]), (_BPF_RET_K, 0, 0, _errno(_ENOSYS))]
    families = (_AF_UNIX, _AF_INET, _AF_INET6) if allow_network else (_AF_UNIX,)
    for name in _SOCKET_CALLS:  # then: the family must be one of `families`
        block = [(_BPF_LD_W_ABS, 0, 0, _ARG0)]
        block += [(_BPF_JEQ_K, len(families) - i, 0, family) for i, family in enumerate(families)]
        block += [(_BPF_RET_K, 0, 0, _errno(_EAFNOSUPPORT)), (_BPF_RET_K, 0, 0, _RET_ALLOW)]
        prog += [(_BPF_JEQ_K, 0, len(block), calls[name]), *block]
    clone = [(_BPF_LD_W_ABS, 0, 0, _ARG0), (_BPF_JSET_K, 0, 1, _CLONE_NEW_ANY), (_BPF_RET_K, 0, 0, _errno(_EPERM)), (_BPF_RET_K, 0, 0, _RET_ALLOW)]
    prog += [(_BPF_JEQ_K, 0, len(clone), calls["clone"]), *clone]
    prog.append((_BPF_RET_K, 0, 0, _RET_ALLOW))
    return prog


def install_seccomp(block_network: bool = True) -> None:
    """Needs no_new_privs (set here) and a known architecture; raises OSError otherwise."""
    machine = platform.machine()
    if machine not in _NR:
        raise OSError(0, f"seccomp filter not written for {machine}")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    code = b"".join(struct.pack("=HBBI", *ins) for ins in _filter(machine, allow_network=not block_network))
    buf = ctypes.create_string_buffer(code)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(code) // 8, ctypes.addressof(buf))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0), "seccomp")
