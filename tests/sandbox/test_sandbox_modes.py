"""The fallback modes and the isolation report: what each mode really protects here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from thinkrl.sandbox import SandboxLimits, isolation_report, run_tests
from thinkrl.sandbox.isolation import candidate_modes, probe

LIMITS = SandboxLimits(wall_time_s=3.0, cpu_time_s=1.0, memory_mb=256)
ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(2, 2) == 4\ncheck(add)\n"


def test_isolation_report_names_the_active_mechanisms():
    report = isolation_report()
    assert report["mode"] in ("namespaces", "userns", "setuid", "rlimits")
    assert report["mode"] == candidate_modes()[0] or report["tried"][candidate_modes()[0]].startswith("unavailable")
    if report["mode"] == "namespaces":  # root on Linux, as on CI
        assert report["host_filesystem"] == "read-only"
        assert report["network"] == "blocked" and report["network_interfaces"] == ["lo"]
        assert report["worker_uid"] >= 2_000_000 and report["worker_pid"] == 2
        assert report["private_proc"] and "/root" in report["hidden_paths"]


@pytest.mark.parametrize("mode", ["namespaces", "userns", "rlimits"])
def test_each_mode_grades_and_bounds(mode):
    if not probe(mode)["ok"]:
        pytest.skip(f"{mode} isolation is unavailable here")
    assert run_tests(ADD, ADD_TESTS, limits=LIMITS, isolation=mode).all_passed
    wrong = run_tests("def add(a, b):\n    return 3\n", ADD_TESTS, limits=LIMITS, isolation=mode)
    assert (wrong.status, wrong.passed, wrong.total) == ("failed", 1, 2)
    loop = run_tests("def add(a, b):\n    while True:\n        pass\n", ADD_TESTS, limits=LIMITS, isolation=mode)
    assert loop.status == "timeout" and loop.duration_s < LIMITS.wall_time_s + 2
    early = run_tests("import os\nos._exit(0)\n", ADD_TESTS, limits=LIMITS, isolation=mode)
    assert early.passed == 0 and early.status == "exited"


@pytest.mark.parametrize("mode", ["namespaces", "userns"])
def test_namespace_modes_protect_host_files_and_network(mode, tmp_path):
    if not probe(mode)["ok"]:
        pytest.skip(f"{mode} isolation is unavailable here")
    canary = tmp_path / "canary"
    canary.write_text("original")
    outside = Path("/var/tmp") / f"thinkrl-{mode}-{os.getpid()}"
    program = (
        "import os, socket\ndef f():\n    hits = 0\n"
        f"    for path in ({str(canary)!r}, {str(outside)!r}):\n"
        "        try:\n            open(path, 'w').write('x')\n            hits += 1\n        except OSError:\n            pass\n"
        "    try:\n        socket.socket().connect(('1.1.1.1', 80))\n        hits += 1\n    except OSError:\n        pass\n"
        "    return hits\n"
    )
    result = run_tests(program, "assert f() == 0\n", "f", LIMITS, isolation=mode)
    assert result.all_passed, result
    assert canary.read_text() == "original" and not outside.exists()


def test_network_can_be_allowed_explicitly():
    program = "import socket\ndef f():\n    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()\n    return 1\n"
    assert not run_tests(program, "assert f() == 1\n", "f", LIMITS).all_passed
    assert run_tests(program, "assert f() == 1\n", "f", SandboxLimits(network=True)).all_passed
