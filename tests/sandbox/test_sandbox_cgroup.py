"""The per-run cgroup: the limits it writes (v2 and v1 layouts, on a stand-in folder) and, where
this host gives one, a real run's tree bounded by it."""

from __future__ import annotations

import pytest

from thinkrl.sandbox import SandboxLimits, cgroup, run_tests
from thinkrl.sandbox.cgroup import Layout, RunCgroup


def _made(monkeypatch, found: Layout) -> RunCgroup:
    monkeypatch.setattr(cgroup, "layout", lambda: found)
    group = RunCgroup.create(memory_mb=300, max_processes=10, cpus=1.5)
    assert group is not None
    return group


def test_v2_limits_the_whole_tree(monkeypatch, tmp_path):
    group = _made(monkeypatch, Layout(2, {"": tmp_path}))
    folder = group.folders[""]
    assert folder.parent == tmp_path and folder.name.startswith("thinkrl-sandbox-")
    assert (folder / "memory.max").read_text() == str(300 * 2**20)
    assert (folder / "pids.max").read_text() == "10"
    (folder / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    (folder / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert group.cpu_seconds() == 2.5 and group.oom_killed()


def test_v1_limits_memory_with_swap_and_pids(monkeypatch, tmp_path):
    folders = {name: tmp_path / name for name in ("memory", "pids", "cpu", "cpuacct")}
    for folder in folders.values():
        folder.mkdir()
    group = _made(monkeypatch, Layout(1, folders))
    memory = group.folders["memory"]
    assert (memory / "memory.limit_in_bytes").read_text() == str(300 * 2**20)
    assert (group.folders["pids"] / "pids.max").read_text() == "10"
    (group.folders["cpuacct"] / "cpuacct.usage").write_text("1500000000\n")
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    assert group.cpu_seconds() == 1.5 and not group.oom_killed()


def test_no_layout_means_no_cgroup(monkeypatch):
    monkeypatch.setattr(cgroup, "layout", lambda: None)
    assert RunCgroup.create(memory_mb=100, max_processes=4) is None and not RunCgroup.available()


@pytest.mark.skipif(cgroup.layout() is None, reason="no writable cgroup on this host")
def test_a_real_run_is_killed_for_the_trees_memory():
    forks = ("import os, time\ndef f():\n    for _ in range(5):\n        if os.fork() == 0:\n"
             "            b = bytearray(100 * 2**20)\n            b[::4096] = b'x' * len(b[::4096])\n            time.sleep(20)\n"
             "    time.sleep(20)\n")
    result = run_tests(forks, "assert f() is None\n", "f", SandboxLimits(wall_time_s=3.0, memory_mb=200))
    assert result.status == "memory" and result.passed == 0, result
