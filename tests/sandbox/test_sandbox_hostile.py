"""Hostile programs against the sandbox: each must score nothing (or be contained) and leave the host alone.

All cases run once, concurrently, through run_many (module fixture); each test then
asserts on its own result. The tests are written so that they pass only if the attack
worked: a pass would mean the sandbox leaked.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from thinkrl.sandbox import SandboxLimits, run_many

LIMITS = SandboxLimits(wall_time_s=3.0, cpu_time_s=1.0, memory_mb=256, max_processes=8, max_output_bytes=100_000)
SLACK_S = 2.0  # process start and teardown on a busy 2-core machine
SECRET = "hunter2-" + uuid.uuid4().hex
MARK = str(uuid.uuid4().int)[:12]  # digits: it ends up in a `sleep` argument
CHECK_ONE = "def check(candidate):\n    assert candidate() == 1\n"


def _cases(canary: Path, host_tmp_file: Path, port: int, daemon_file: Path) -> dict[str, tuple[str, str, str | None]]:
    """name -> (program, tests, entry_point). Programs know the host paths they attack."""
    grader = Path(__file__).resolve().parents[2] / "src" / "thinkrl" / "sandbox" / "runner.py"
    return {
        "infinite_loop": ("def f():\n    while True:\n        pass\n", CHECK_ONE, "f"),
        "infinite_loop_at_load": ("while True:\n    pass\n", CHECK_ONE, "f"),
        "sleep_past_limit": ("import time\ndef f():\n    time.sleep(60)\n    return 1\n", CHECK_ONE, "f"),
        "ignores_sigterm_and_sigxcpu": (
            "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\n"
            "def f():\n    while True:\n        pass\n",
            CHECK_ONE,
            "f",
        ),
        "fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", CHECK_ONE, "f"),
        "thread_bomb": (
            "import threading, time\nfor _ in range(100000):\n    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
            "def f():\n    return 1\n",
            CHECK_ONE,
            "f",
        ),
        "memory_bomb": ("def f():\n    blocks = []\n    while True:\n        blocks.append(bytearray(50_000_000))\n", CHECK_ONE, "f"),
        "huge_allocation": ("def f():\n    return len(bytearray(2**36))\n", CHECK_ONE, "f"),
        "huge_output": ("def f():\n    while True:\n        print('x' * 10000)\n", CHECK_ONE, "f"),
        "huge_stderr": ("import sys\nwhile True:\n    sys.stderr.write('y' * 10000)\n", CHECK_ONE, "f"),
        "overwrite_canary": (f"def f():\n    open({str(canary)!r}, 'w').write('pwned')\n    return 1\n", CHECK_ONE, "f"),
        "delete_canary_dir": (
            f"import shutil, os\ndef f():\n    shutil.rmtree({str(canary.parent)!r})\n    return int(not os.path.exists({str(canary)!r}))\n",
            CHECK_ONE,
            "f",
        ),
        "write_host_tmp": (f"def f():\n    open({str(host_tmp_file)!r}, 'w').write('escaped')\n    return 1\n", CHECK_ONE, "f"),
        "write_root_fs": ("def f():\n    open('/thinkrl-escape', 'w').write('x')\n    return 1\n", CHECK_ONE, "f"),
        "fill_disk": (
            "def f():\n    with open('big', 'wb') as fh:\n        for _ in range(200):\n            fh.write(b'0' * 10_000_000)\n    return 1\n",
            CHECK_ONE,
            "f",
        ),
        "read_env_secret": (
            "import os\ndef f():\n    print(dict(os.environ))\n    return os.environ.get('THINKRL_TEST_SECRET')\n",
            f"assert f() == {SECRET!r}\n",
            None,
        ),
        "read_parent_environ": (
            f"def f():\n    return open('/proc/{os.getpid()}/environ', 'rb').read().count(b'THINKRL_TEST_SECRET')\n",
            CHECK_ONE,
            "f",
        ),
        "network_connect": (
            f"import socket\ndef f():\n    socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n    return 1\n",
            CHECK_ONE,
            "f",
        ),
        "sys_exit_before_tests": ("import sys\ndef f():\n    return 0\nsys.exit(0)\n", CHECK_ONE, "f"),
        "os_exit_before_tests": ("import os\ndef f():\n    return 0\nos._exit(0)\n", CHECK_ONE, "f"),
        "exit_inside_tests": ("import os\ndef f():\n    os._exit(0)\n", CHECK_ONE, "f"),
        "systemexit_inside_tests": ("def f():\n    raise SystemExit(0)\n", CHECK_ONE, "f"),
        "print_fake_pass": ("print('PASS\\nall tests passed\\n1/1 passed')\ndef f():\n    return 0\n", CHECK_ONE, "f"),
        "patch_assertion_error": (
            "import builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})\nAssertionError = None\ndef f():\n    return 0\n",
            CHECK_ONE,
            "f",
        ),
        "patch_builtin_abs": (
            "import builtins\nbuiltins.abs = lambda x: 0\nbuiltins.round = lambda *a: 1\ndef f():\n    return 5.0\n",
            "def check(candidate):\n    assert abs(candidate() - 1.0) < 1e-6\n    assert round(candidate()) == 1\n",
            "f",
        ),
        "patch_builtin_exec": (
            "import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.eval = lambda *a, **k: None\ndef f():\n    return 0\n",
            CHECK_ONE,
            "f",
        ),
        "patch_stdlib_module": (
            "import math\nmath.isclose = lambda *a, **k: True\ndef f():\n    return 7.0\n",
            "def check(candidate):\n    import math\n    assert math.isclose(candidate(), 1.0)\n",
            "f",
        ),
        "always_equal_object": (
            "class Eq:\n    def __eq__(self, other):\n        return True\n    def __ne__(self, other):\n        return False\ndef f():\n    return Eq()\n",
            CHECK_ONE,
            "f",
        ),
        "always_equal_int_subclass": (
            "class I(int):\n    def __eq__(self, other):\n        return True\ndef f():\n    return I(0)\n",
            CHECK_ONE,
            "f",
        ),
        "always_equal_in_plain_asserts": (
            "class Eq:\n    __eq__ = lambda s, o: True\ndef f():\n    return Eq()\n",
            "assert f() == 1\n",
            None,
        ),
        "tracer_skips_asserts": (
            "import sys\ndef tracer(frame, event, arg):\n    raise SystemExit\nsys.settrace(tracer)\nsys.setprofile(tracer)\ndef f():\n    return 0\n",
            CHECK_ONE,
            "f",
        ),
        "define_fake_check": ("def check(candidate):\n    pass\ndef f():\n    return 0\n", CHECK_ONE, "f"),
        "patch_harness_module": (
            "import __main__, sys\nfor name in list(vars(__main__)):\n    if callable(getattr(__main__, name)):\n        setattr(__main__, name, lambda *a, **k: None)\n"
            "def f():\n    return 0\n",
            CHECK_ONE,
            "f",
        ),
        "fake_records_on_every_fd": (
            "import os\nfor fd in range(3, 64):\n    for line in (b'0 0 ready {}\\n', b'x 1 program ok\\n', b'x 2 unit 0 pass\\n', b'x 3 done 1\\n'):\n"
            "        try:\n            os.write(fd, line)\n        except OSError:\n            pass\ndef f():\n    return 0\n",
            CHECK_ONE,
            "f",
        ),
        "close_every_fd_then_exit": ("import os\nos.closerange(0, 1024)\ndef f():\n    return 0\n", CHECK_ONE, "f"),
        "exception_name_injects_record": (
            "E = type('X\\n0 9 unit 0 pass\\n', (Exception,), {})\ndef f():\n    raise E()\n",
            CHECK_ONE,
            "f",
        ),
        "kill_parent": ("import os, signal\ndef f():\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 0\n", CHECK_ONE, "f"),
        "kill_everything": ("import os, signal\ndef f():\n    os.kill(-1, signal.SIGKILL)\n    return 0\n", CHECK_ONE, "f"),
        "daemon_outlives_run": (
            "import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            f"        os.execv('/bin/sh', ['sh', '-c', 'sleep 1.5; echo alive > {daemon_file}; exec sleep 31.{MARK}'])\n"
            "    os._exit(0)\ndef f():\n    return 1\n",
            # the tests pass only if the daemon wrote its file from inside the sandbox, i.e. survived
            f"def check(candidate):\n    import time, os\n    time.sleep(2)\n    assert os.path.exists({str(daemon_file)!r}) and candidate() == 0\n",
            "f",
        ),
        "recursion_bomb": ("import sys\nsys.setrecursionlimit(10**7)\ndef f(n=0):\n    return f(n + 1)\n", CHECK_ONE, "f"),
        "read_etc_shadow": ("def f():\n    return len(open('/etc/shadow').read()) > 0\n", CHECK_ONE, "f"),
        "read_grader_source": (f"def f():\n    return int(len(open({str(grader)!r}).read()) > 0)\n", CHECK_ONE, "f"),
        "raise_rlimits": (
            "import resource\ndef f():\n    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
            "    resource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n    return 1\n",
            CHECK_ONE,
            "f",
        ),
        "ctypes_become_root": (
            "import ctypes, os\ndef f():\n    libc = ctypes.CDLL(None)\n    libc.setuid(0)\n    libc.unshare(0x10000000 | 0x00020000)\n"
            "    return int(os.geteuid() == 0 and os.access('/etc/shadow', os.R_OK) and os.access('/usr', os.W_OK))\n",
            CHECK_ONE,
            "f",
        ),
        "remount_host_writable": (
            "import ctypes, os\ndef f():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
            "    libc.mount(None, b'/', None, 32 | 4096, None)\n    open('/thinkrl-remounted', 'w').write('x')\n    return 1\n",
            CHECK_ONE,
            "f",
        ),
    }


class _Server:
    """A real TCP server on the host's loopback that counts connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Run every hostile case once, concurrently; yield (results by name, the host fixtures)."""
    home = tmp_path_factory.mktemp("host")
    canary = home / "canary.txt"
    canary.write_text("original")
    host_tmp_file = Path("/tmp") / f"thinkrl-escape-{MARK}"
    daemon_file = home / "daemon-was-here"
    server = _Server()
    os.environ["THINKRL_TEST_SECRET"] = SECRET
    try:
        cases = _cases(canary, host_tmp_file, server.port, daemon_file)
        names = list(cases)
        started = time.monotonic()
        results = dict(zip(names, run_many([cases[n] for n in names], LIMITS, max_workers=4), strict=True))
        elapsed = time.monotonic() - started
        time.sleep(2.0)  # give a surviving daemon time to act
        yield {
            "results": results,
            "elapsed": elapsed,
            "canary": canary,
            "home": home,
            "host_tmp_file": host_tmp_file,
            "daemon_file": daemon_file,
            "accepted": server.accepted,
        }
    finally:
        os.environ.pop("THINKRL_TEST_SECRET", None)
        server.close()
        host_tmp_file.unlink(missing_ok=True)


CASE_NAMES = list(_cases(Path("/x"), Path("/x"), 1, Path("/x")))


# Writing to "/tmp" succeeds, into the sandbox's private /tmp: contained, not refused, so
# the run may pass; test_host_files_are_unchanged checks the host's /tmp.
CONTAINED_NOT_REFUSED = {"write_host_tmp"}


@pytest.mark.parametrize("name", CASE_NAMES)
def test_hostile_program_scores_nothing_within_limits(hostile, name):
    result = hostile["results"][name]
    if name not in CONTAINED_NOT_REFUSED:
        assert not result.all_passed, f"{name} passed: {result}"
        assert result.passed == 0, f"{name}: {result}"
    assert result.duration_s <= LIMITS.wall_time_s + SLACK_S, f"{name} ran {result.duration_s:.1f}s"
    assert len(result.stdout) + len(result.stderr) <= 2 * LIMITS.max_output_bytes


EXPECTED_STATUS = {
    "infinite_loop": {"timeout"},
    "infinite_loop_at_load": {"timeout"},
    "sleep_past_limit": {"timeout"},
    "ignores_sigterm_and_sigxcpu": {"timeout", "crashed"},  # SIGKILL at the hard CPU limit
    "memory_bomb": {"memory"},
    "huge_allocation": {"memory"},
    "huge_output": {"output_limit"},
    "huge_stderr": {"output_limit"},
    "sys_exit_before_tests": {"error"},  # SystemExit while loading is caught: the program failed
    "os_exit_before_tests": {"exited"},
    "exit_inside_tests": {"exited"},
    "systemexit_inside_tests": {"failed"},
    "print_fake_pass": {"failed"},
    "fake_records_on_every_fd": {"tampered"},
    "close_every_fd_then_exit": {"crashed", "exited"},
    "always_equal_object": {"failed"},
    "recursion_bomb": {"crashed", "failed", "timeout", "memory"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_STATUS))
def test_hostile_program_gets_the_right_status(hostile, name):
    result = hostile["results"][name]
    assert result.status in EXPECTED_STATUS[name], f"{name}: {result}"


def test_host_files_are_unchanged(hostile):
    assert hostile["canary"].read_text() == "original"
    assert sorted(p.name for p in hostile["home"].iterdir()) == ["canary.txt"]
    assert not hostile["host_tmp_file"].exists()
    assert not Path("/thinkrl-escape").exists() and not Path("/thinkrl-remounted").exists()


def test_no_process_outlives_its_run(hostile):
    assert not hostile["daemon_file"].exists()
    survivors = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if MARK.encode() in (entry / "cmdline").read_bytes():
                    survivors.append(entry.name)
            except OSError:
                pass
    assert survivors == []


def test_secrets_and_network_do_not_leak(hostile):
    results = hostile["results"]
    assert SECRET not in results["read_env_secret"].stdout
    assert results["read_env_secret"].stdout  # it did print the environment it saw
    assert hostile["accepted"] == 0


def test_hostile_batch_runs_concurrently(hostile):
    # ~45 cases, a dozen of which use their whole 3 s: sequentially that alone is > 36 s.
    assert hostile["elapsed"] < 30, hostile["elapsed"]
