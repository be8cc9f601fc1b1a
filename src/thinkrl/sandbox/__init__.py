"""Run untrusted generated code isolated and bounded; the verdict comes from the sandbox's own harness.

    from thinkrl.sandbox import run_tests
    result = run_tests(program, example.tests, example.entry_point)
    result.all_passed, result.passed, result.total, result.status

isolation.py documents the fallback chain (namespaces > userns > setuid > rlimits) and
harness.py the threat model of the verdict channel.
"""

from thinkrl.sandbox.isolation import SandboxUnavailable, isolation_report
from thinkrl.sandbox.limits import STATUSES, SandboxLimits, SandboxResult
from thinkrl.sandbox.runner import run_many, run_tests

__all__ = ["STATUSES", "SandboxLimits", "SandboxResult", "SandboxUnavailable", "isolation_report", "run_many", "run_tests"]
