"""Programs that try to be scored right while wrong, one or more per class of attack.

Each program's `add` is wrong (or its attack is what would make the tests pass), and each
must score 0 through the production path (`run_many`, HumanEval-shaped and plain-assert
tests alike), within its limits, leaving the host as it was: no file written, no cgroup
left, no process left. The classes: reaching the tests through the program's own
interpreter (frames, gc, /proc/self/mem, other processes); the tests' namespace (shadowed
builtins, sys.modules, a missing entry point); values that are not plain data; limits
dodged by forking or by memory outside the address space; sockets, files and devices the
program should not have.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from thinkrl.sandbox import SandboxLimits, run_many
from thinkrl.sandbox.cgroup import layout

LIMITS = SandboxLimits(wall_time_s=4.0, cpu_time_s=1.5, memory_mb=256, max_processes=8, max_output_bytes=100_000)
CHECK = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(2, 2) == 4\n    assert abs(candidate(0.5, 0.25) - 0.75) < 1e-9\n\ncheck(add)\n"
PLAIN = "assert add(1, 2) == 3\nassert add(2, 2) == 4\n"
WRONG = "def add(a, b):\n    return a - b\n"
# The attack's success is the only way `add` can be right: it returns a + b only if it worked.
IF_IT_WORKED = "def add(a, b):\n    return a + b if attack() else a - b\n"

ATTACKS = {
    # 1. the tests' interpreter, reached from the program's
    "frames_rewrite_callers": WRONG.replace("return a - b", (
        "import sys\n    frame = sys._getframe(1)\n    while frame is not None:\n"
        "        for key in list(frame.f_locals):\n            if key in ('outcome', 'passed', 'candidate', 'check'):\n"
        "                frame.f_locals[key] = 'pass'\n        frame = frame.f_back\n    return a - b")),
    "gc_closures_forge_records": (
        "import gc, os\nfor obj in gc.get_objects():\n    if callable(obj) and getattr(obj, '__closure__', None):\n"
        "        for cell in obj.__closure__:\n            try:\n                value = cell.cell_contents\n            except ValueError:\n"
        "                continue\n            if isinstance(value, str) and len(value) == 32:\n"
        "                for fd in range(3, 32):\n                    for i, rec in enumerate(('ready', 'program ok', 'unit 0 pass', 'unit 1 pass', 'unit 2 pass', 'done 3')):\n"
        "                        try:\n                            os.write(fd, f'{value} {i} {rec}\\n'.encode())\n"
        "                        except OSError:\n                            pass\n" + WRONG),
    "gc_replace_every_function": (
        "import gc\nfor obj in gc.get_objects():\n    if isinstance(obj, dict) and 'check' in obj:\n        obj['check'] = lambda c: None\n"
        "    if isinstance(obj, dict) and 'add' in obj and obj is not globals():\n        obj['add'] = lambda a, b: a + b\n" + WRONG),
    "proc_self_mem_after_dumpable": IF_IT_WORKED + (
        "def attack():\n    import ctypes\n    ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)\n    try:\n"
        "        open('/proc/self/mem', 'r+b').close()\n        return True\n    except OSError:\n        return False\n"),
    "write_into_other_processes": IF_IT_WORKED + (
        "def attack():\n    import os\n    hits = 0\n    for pid in os.listdir('/proc') if os.path.isdir('/proc') else []:\n"
        "        if not pid.isdigit() or int(pid) == os.getpid():\n            continue\n"
        "        for path in [f'/proc/{pid}/mem'] + [f'/proc/{pid}/fd/{n}' for n in range(3, 16)]:\n            try:\n"
        "                with open(path, 'r+b', buffering=0) as fh:\n                    hits += 1\n            except OSError:\n                pass\n"
        "    return hits > 0\n"),
    # 2. the tests' namespace
    "shadow_builtins": WRONG + "def abs(x):\n    return 0\nlen = sorted = set = lambda *a, **k: 0\nAssertionError = None\n",
    "fake_math_module": (
        "import sys, types\nfake = types.ModuleType('math')\nfake.isclose = lambda *a, **k: True\nsys.modules['math'] = fake\n"
        "class Finder:\n    def find_spec(self, name, path=None, target=None):\n        return None\nsys.meta_path.insert(0, Finder())\n" + WRONG),
    "no_entry_point_own_candidate": "def candidate(*a, **k):\n    return 3\ndef check(c):\n    pass\n",
    # 3. values that are not plain data
    "callable_instance": "class Eq:\n    __eq__ = lambda s, o: True\n    __lt__ = lambda s, o: True\n    __sub__ = lambda s, o: s\n    __abs__ = lambda s: 0\n"
    "class Add:\n    def __call__(self, a, b):\n        return Eq()\nadd = Add()\n",
    "class_as_entry_point": "class add:\n    def __init__(self, a, b):\n        pass\n    __eq__ = lambda s, o: True\n    __sub__ = lambda s, o: s\n    __abs__ = lambda s: 0\n    __lt__ = lambda s, o: True\n",
    "partial_returns_eq": "import functools\nclass Eq(int):\n    __eq__ = lambda s, o: True\n    __sub__ = lambda s, o: 0\n"
    "def _add(x, a, b):\n    return Eq(x)\nadd = functools.partial(_add, 0)\n",
    "exec_with_other_globals": "class Eq(float):\n    __eq__ = lambda s, o: True\n    __sub__ = lambda s, o: 0.0\n"
    "g = {'Eq': Eq}\nexec('def add(a, b):\\n    return Eq(0)', g)\nadd = g['add']\n",
    "container_holds_eq": "class Eq:\n    __eq__ = lambda s, o: True\ndef add(a, b):\n    return [Eq()][0] if a else {'x': Eq()}\n",
    "self_containing_list": "def add(a, b):\n    x = []\n    x.append(x)\n    return x\n",
    "stop_iteration_ends_the_loop": "def add(a, b):\n    raise StopIteration\n",
    # 4. limits on the whole tree
    "fork_past_memory": IF_IT_WORKED + (
        "def attack():\n    import os\n    children = []\n    for _ in range(6):\n        pid = os.fork()\n        if pid == 0:\n"
        "            try:\n                block = bytearray(150 * 2**20)\n                for i in range(0, len(block), 4096):\n                    block[i] = 1\n"
        "                os._exit(0)\n            except BaseException:\n                os._exit(1)\n        children.append(pid)\n"
        "    return all(os.waitpid(pid, 0)[1] == 0 for pid in children)\n"),
    "fork_and_hold_memory": IF_IT_WORKED + (
        "def attack():\n    import os, time\n    r, w = os.pipe()\n    for _ in range(6):\n        if os.fork() == 0:\n"
        "            block = bytearray(150 * 2**20)\n            for i in range(0, len(block), 4096):\n                block[i] = 1\n"
        "            os.write(w, b'x')\n            time.sleep(30)\n            os._exit(0)\n    got = b''\n    while len(got) < 6:\n"
        "        got += os.read(r, 6)\n    return True\n"),
    "memfd_outside_rlimit_as": IF_IT_WORKED + (
        "def attack():\n    import os\n    try:\n        fd = os.memfd_create('x')\n    except OSError:\n        return False\n"
        "    for _ in range(400):\n        os.write(fd, b'0' * 2**20)\n    return True\n"),
    "sysv_shm_outside_rlimit_as": IF_IT_WORKED + (
        "def attack():\n    import ctypes\n    libc = ctypes.CDLL(None, use_errno=True)\n    libc.shmget.restype = ctypes.c_int\n"
        "    return libc.shmget(0, ctypes.c_size_t(400 * 2**20), 0o1000 | 0o600) >= 0\n"),
    "dev_shm_fill": IF_IT_WORKED + (
        "def attack():\n    try:\n        with open('/dev/shm/x', 'wb') as fh:\n            for _ in range(100):\n"
        "                fh.write(b'0' * 2**20)\n        return True\n    except OSError:\n        return False\n"),
    "cpu_across_processes": IF_IT_WORKED + (
        "def attack():\n    import os, time\n    children = []\n    for _ in range(4):\n        pid = os.fork()\n        if pid == 0:\n"
        "            end = time.process_time() + 0.9\n            while time.process_time() < end:\n                pass\n            os._exit(0)\n"
        "        children.append(pid)\n    return all(os.waitpid(pid, 0)[1] == 0 for pid in children)\n"),
    # 5. sockets, io_uring, files, devices
    "vsock_and_netlink_sockets": IF_IT_WORKED + (
        "def attack():\n    import socket\n    made = 0\n    for family, kind in ((40, socket.SOCK_STREAM), (16, socket.SOCK_RAW), (16, socket.SOCK_DGRAM), (17, socket.SOCK_RAW)):\n"
        "        try:\n            socket.socket(family, kind).close()\n            made += 1\n        except OSError:\n            pass\n    return made > 0\n"),
    "io_uring_setup": IF_IT_WORKED + (
        "def attack():\n    import ctypes\n    params = ctypes.create_string_buffer(120)\n"
        "    return ctypes.CDLL(None, use_errno=True).syscall(425, 8, params) >= 0\n"),
    "new_user_namespace": IF_IT_WORKED + (
        "def attack():\n    import ctypes\n    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    return libc.unshare(0x10000000) == 0 or libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0) > 0\n"),
    "read_host_files": IF_IT_WORKED + (
        "def attack():\n    import os\n    found = 0\n    for path in ('/etc/passwd', '/etc/hostname', '/var', '/home', '/work', '/root/.bashrc', '/srv', '/opt', '/proc/1/environ', '/sys/kernel'):\n"
        "        found += os.path.exists(path)\n    return found > 0\n"),
    "gpu_and_other_devices": IF_IT_WORKED + (
        "def attack():\n    import os\n    return set(os.listdir('/dev')) - {'null', 'zero', 'urandom', 'shm'} != set()\n"),
    "write_outside_tmp": IF_IT_WORKED + (
        "def attack():\n    for path in ('/x', '/usr/lib/x', '/dev/x'):\n        try:\n            open(path, 'w').close()\n            return True\n"
        "        except OSError:\n            pass\n    return False\n"),
    "daemon_keeps_state": IF_IT_WORKED + (
        "def attack():\n    import os\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n            import time\n"
        "            time.sleep(31)\n        os._exit(0)\n    return False\n"),
}

def _leftover_cgroups() -> list[str]:
    found = layout()
    if found is None:
        return []
    return sorted(p.name for folder in found.folders.values() for p in folder.glob("thinkrl-sandbox-*"))


@pytest.fixture(scope="module")
def forged():
    tmp_before = set(os.listdir("/tmp"))
    cgroups_before = _leftover_cgroups()
    names = list(ATTACKS)
    jobs = []
    for name in names:
        jobs += [(ATTACKS[name], CHECK, "add"), (ATTACKS[name], PLAIN, None)]
    results = run_many(jobs, LIMITS, max_workers=4)
    by_name = {name: (results[2 * i], results[2 * i + 1]) for i, name in enumerate(names)}
    yield {"results": by_name, "tmp_before": tmp_before, "cgroups_before": cgroups_before}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_scores_nothing(forged, name):
    for result in forged["results"][name]:
        assert result.passed == 0 and not result.all_passed, f"{name}: {result}"
        assert result.duration_s < LIMITS.wall_time_s + 3.0, f"{name} ran {result.duration_s:.1f}s"


def test_exceptions_cross_as_builtin_types_only():
    tests = "def check(candidate):\n    assert all(map(candidate, [1, 2], [3, 4]))\n    try:\n        candidate(-1, 0)\n        assert False\n    except ValueError:\n        pass\n\ncheck(add)\n"
    program = "class Custom(Exception):\n    pass\ndef add(a, b):\n    if a < 0:\n        raise ValueError('negative')\n    raise {}\n"
    stop, custom = run_many([(program.format("StopIteration"), tests, "add"), (program.format("Custom()"), tests, "add")], LIMITS)
    assert stop.outcomes == ["fail", "pass"] and custom.outcomes == ["fail", "pass"], (stop, custom)


def test_right_answers_still_pass_in_both_shapes():
    right = run_many([("def add(a, b):\n    return a + b\n", CHECK, "add"), ("def add(a, b):\n    return a + b\n", PLAIN, None)], LIMITS)
    assert [r.all_passed for r in right] == [True, True], right


def test_missing_entry_point_fails_every_unit(forged):
    result = forged["results"]["no_entry_point_own_candidate"][0]
    assert result.outcomes == ["fail"] * 3 and "NameError" in result.detail


def test_protocol_breakers_and_tree_limits_get_their_status(forged):
    results = forged["results"]
    assert {r.status for r in results["gc_closures_forge_records"]} <= {"failed", "tampered"}  # junk goes to the replies only
    assert {r.status for r in results["fork_and_hold_memory"]} <= {"memory", "failed", "crashed"}
    if layout() is not None:  # a cgroup bounds the tree: the kernel's OOM kill is reported as memory
        assert {r.status for r in results["fork_and_hold_memory"]} == {"memory"}
        assert {r.status for r in results["cpu_across_processes"]} == {"timeout"}


def test_host_is_left_as_it_was(forged):
    assert {p for p in set(os.listdir("/tmp")) - forged["tmp_before"] if p.startswith("thinkrl")} == set()
    assert _leftover_cgroups() == forged["cgroups_before"]
    survivors = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                if b"sandbox/harness.py" in cmdline or b"sandbox/tester.py" in cmdline or entry.stat().st_uid >= 2_000_000:
                    survivors.append((entry.name, cmdline))
            except OSError:
                pass
    assert survivors == []


def test_without_a_cgroup_the_tree_still_shares_one_memory_limit(monkeypatch):
    """Where no cgroup can be made (not root, no delegation), each process gets the run's
    memory divided by the (lowered) process cap: forking does not multiply the limit."""
    from thinkrl.sandbox import cgroup
    from thinkrl.sandbox.runner import process_budget

    monkeypatch.setattr(cgroup, "layout", lambda: None)
    processes, each_mb = process_budget(LIMITS, tree_bounded=False)
    assert processes * each_mb <= LIMITS.memory_mb and processes <= LIMITS.max_processes
    names = ["fork_past_memory", "fork_and_hold_memory", "memfd_outside_rlimit_as", "sysv_shm_outside_rlimit_as"]
    results = run_many([(ATTACKS[name], CHECK, "add") for name in names], LIMITS, max_workers=2)
    for name, result in zip(names, results, strict=True):
        assert result.passed == 0, f"{name}: {result}"
    assert run_many([("def add(a, b):\n    return a + b\n", CHECK, "add")], LIMITS)[0].all_passed


HONEST = {
    "subprocess": "import subprocess, sys\ndef f():\n    return int(subprocess.run([sys.executable, '-c', 'print(41+1)'], capture_output=True, text=True).stdout)\n",
    "threads": "import threading\ndef f():\n    out=[]\n    t=[threading.Thread(target=out.append, args=(i,)) for i in range(4)]\n    [x.start() for x in t]; [x.join() for x in t]\n    return 42 if sorted(out)==[0,1,2,3] else 0\n",
    "mp_pool": "import multiprocessing as mp\ndef sq(x):\n    return x*x\ndef f():\n    with mp.get_context('fork').Pool(2) as p:\n        return 42 if p.map(sq, [1,2,3]) == [1,4,9] else 0\n",
    "tempfile": "import tempfile, os\ndef f():\n    with tempfile.NamedTemporaryFile('w', delete=False) as fh:\n        fh.write('x')\n    return 42 if os.path.getsize(fh.name) == 1 else 0\n",
    "imports": "import json, re, math, decimal, fractions, hashlib, collections, itertools, functools, heapq, bisect, random, statistics, datetime, ctypes, sqlite3, zlib, socket\ndef f():\n    return 42\n",
    "socketpair": "import socket\ndef f():\n    a, b = socket.socketpair()\n    a.send(b'x')\n    return 42 if b.recv(1) == b'x' else 0\n",
    "ppe": "from concurrent.futures import ProcessPoolExecutor\ndef sq(x):\n    return x*x\ndef f():\n    with ProcessPoolExecutor(2) as ex:\n        return 42 if list(ex.map(sq, [1,2])) == [1,4] else 0\n",
}


def test_honest_programs_keep_what_python_offers():
    """The fences refuse what an attack needs, not what ordinary programs use: subprocesses
    of the interpreter, threads, multiprocessing pools, temp files, the stdlib, AF_UNIX pairs."""
    limits = SandboxLimits(wall_time_s=10.0, cpu_time_s=8.0, memory_mb=512)
    results = run_many([(program, "assert f() == 42\n", "f") for program in HONEST.values()], limits)
    assert {name: r.status for name, r in zip(HONEST, results, strict=True)} == dict.fromkeys(HONEST, "passed")
