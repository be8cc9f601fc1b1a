"""Run untrusted generated code isolated and bounded; the verdict comes from the sandbox's own harness.

    from thinkrl.sandbox import run_tests
    result = run_tests(program, example.tests, example.entry_point)
    result.all_passed, result.passed, result.total, result.status

The tests run in their own interpreter (tester.py), the program in the sandbox
(harness.py); they exchange plain data only (wire.py). isolation.py documents the modes
(namespaces > userns, and setuid or rlimits only when asked for), cgroup.py the bounds on
the program's whole process tree; docs/sandbox.md the threat model.
"""

from thinkrl.sandbox.isolation import SandboxUnavailable, isolation_report
from thinkrl.sandbox.limits import STATUSES, SandboxLimits, SandboxResult
from thinkrl.sandbox.runner import run_many, run_tests

__all__ = ["STATUSES", "SandboxLimits", "SandboxResult", "SandboxUnavailable", "isolation_report", "run_many", "run_tests"]
