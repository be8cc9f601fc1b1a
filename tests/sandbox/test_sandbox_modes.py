"""The fallback modes and the isolation report: what each mode really protects here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from thinkrl.sandbox import SandboxLimits, SandboxUnavailable, isolation_report, run_tests
from thinkrl.sandbox.isolation import candidate_modes, choose_mode, probe

LIMITS = SandboxLimits(wall_time_s=3.0, cpu_time_s=1.0, memory_mb=256)
ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(2, 2) == 4\ncheck(add)\n"


def _skip_unless_available(mode: str) -> None:
    try:
        choose_mode(mode)
    except SandboxUnavailable as exc:
        pytest.skip(f"{mode} isolation is refused here: {exc}")
    if not probe(mode)["ok"]:
        pytest.skip(f"{mode} isolation is unavailable here")


def test_isolation_report_names_the_active_mechanisms():
    report = isolation_report()
    assert report["mode"] in ("namespaces", "userns")  # never a weaker mode unless asked for
    assert report["mode"] == candidate_modes()[0] or report["tried"][candidate_modes()[0]].startswith("unavailable")
    assert not report["host_writable"] and not report["caller_environ_readable"]
    assert report["network"] == "blocked" and report["sockets"] == ["unix"] and report["memfd"] == "refused"
    assert report["devices"] == ["null", "shm", "urandom", "zero"]
    visible = report["filesystem"].removeprefix("empty read-only root: ").split(", ")
    assert "home" not in visible and "proc" not in visible and "sys" not in visible and "var" not in visible
    if report["mode"] == "namespaces":  # root on Linux, as on CI
        assert report["worker_uid"] >= 2_000_000 and report["fresh_uid"]


def test_weak_modes_need_an_explicit_opt_in(monkeypatch, caplog):
    from thinkrl.sandbox import isolation

    monkeypatch.setattr(isolation, "candidate_modes", list)  # a machine without namespaces
    isolation._automatic_mode.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable, match="THINKRL_SANDBOX_MODE=setuid"):
            choose_mode()
    finally:
        isolation._automatic_mode.cache_clear()
    isolation._warn_weak.cache_clear()
    try:
        if choose_mode("setuid") == "setuid":
            assert "as asked" in caplog.text and "visible to the program" in caplog.text
    except SandboxUnavailable as exc:  # root with an interpreter other uids cannot read
        assert "as root" in str(exc)


@pytest.mark.parametrize("mode", ["namespaces", "userns", "setuid", "rlimits"])
def test_each_mode_grades_and_bounds(mode):
    _skip_unless_available(mode)
    assert run_tests(ADD, ADD_TESTS, limits=LIMITS, isolation=mode).all_passed
    wrong = run_tests("def add(a, b):\n    return 3\n", ADD_TESTS, limits=LIMITS, isolation=mode)
    assert (wrong.status, wrong.passed, wrong.total) == ("failed", 1, 2)
    loop = run_tests("def add(a, b):\n    while True:\n        pass\n", ADD_TESTS, limits=LIMITS, isolation=mode)
    assert loop.status == "timeout" and loop.duration_s < LIMITS.wall_time_s + 2
    early = run_tests("import os\nos._exit(0)\n", ADD_TESTS, limits=LIMITS, isolation=mode)
    assert early.passed == 0 and early.status == "exited"


@pytest.mark.parametrize("mode", ["namespaces", "userns"])
def test_namespace_modes_protect_host_files_and_network(mode, tmp_path):
    _skip_unless_available(mode)
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
