"""What a sandboxed run may use, and what came out of it: the data crossing the sandbox API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Every status a run can end with. Only "passed" means every test unit ran and passed.
STATUSES = (
    "passed",  # every test unit ran to the end and passed
    "failed",  # the tests ran to the end, some failed
    "timeout",  # wall-clock or CPU limit hit
    "memory",  # the memory limit (the run's cgroup, or a process's address space) stopped the program
    "output_limit",  # stdout + stderr (or the result channel) grew past max_output_bytes
    "error",  # the program or the tests could not be compiled or loaded
    "exited",  # the program's process ended (os._exit, ...) before every test unit had run
    "crashed",  # the program's process was killed by a signal (segfault, abort) before every test unit had run
    "tampered",  # the program broke the call protocol, or the result channel held a record the tester did not write
)


@dataclass(frozen=True)
class SandboxLimits:
    """Bounds for one sandboxed run; the defaults suit one HumanEval-sized problem."""

    wall_time_s: float = 5.0
    cpu_time_s: float = 4.0
    memory_mb: int = 512
    max_processes: int = 16
    max_output_bytes: int = 1_000_000
    max_file_mb: int = 16
    disk_mb: int = 64
    max_open_files: int = 64
    max_value_bytes: int = 4_000_000  # one argument list or return value crossing to or from the program
    network: bool = False

    def __post_init__(self) -> None:
        for name in ("wall_time_s", "cpu_time_s", "memory_mb", "max_processes", "max_output_bytes", "max_file_mb", "disk_mb", "max_value_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {getattr(self, name)!r}")
        if self.max_open_files < 16:
            raise ValueError(f"SandboxLimits.max_open_files must be at least 16 (Python needs some), got {self.max_open_files}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SandboxResult:
    """The verdict of one run, decided by the parent from the harness's authenticated records.

    `passed`/`total` count test units (top-level statements of `check` that hold an
    assert, or top-level asserts); `total` is computed by the parent from the tests'
    syntax, so the program cannot change it.
    """

    status: str
    passed: int
    total: int
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    detail: str = ""
    isolation: str = ""
    outcomes: list[str] = field(default_factory=list)

    @property
    def all_passed(self) -> bool:
        return self.status == "passed" and self.total > 0 and self.passed == self.total

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0
