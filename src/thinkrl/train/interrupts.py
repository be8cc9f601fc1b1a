"""A training run asked to stop (Ctrl-C, or the SIGTERM that Slurm and Kubernetes send before
they kill) finishes the step in progress, writes a checkpoint unless the last one is of
that step, says how to resume, and exits 128 + the signal (130, 143), as a killed process
would. A second signal stops at once; the last checkpoint stays (they are written
atomically).

Signals are only noted when they arrive and acted on between steps: a step stopped halfway
would have a half-applied update and no consistent state to save. Under `accelerate launch`
the processes agree after every step (one all-reduce of the signal number), so a signal that
reached one process stops them all at the same step. The launcher forwards a signal it
receives to every worker, which then see it twice within milliseconds; a repeat that close
to the first is that echo, not a second request.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
ECHO_WINDOW_S = 2.0


class TrainingInterrupted(Exception):
    """A run stopped by a signal, with where it stopped and how to continue. The CLI prints it
    and exits `exit_code`."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, resume_command: str) -> None:
        super().__init__(signum, step, checkpoint, resume_command)
        self.signum, self.step, self.checkpoint, self.resume_command = signum, step, checkpoint, resume_command

    def __str__(self) -> str:
        return self.message()

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def message(self) -> str:
        kept = f"checkpoint {self.checkpoint}" if self.checkpoint else "no checkpoint (nothing to resume)"
        return (f"stopped by {signal.Signals(self.signum).name} after step {self.step}; {kept}; "
                f"resume with: {self.resume_command}")


class StopSignals:
    """Within the block, SIGINT and SIGTERM set a flag that `requested()` reads between steps.
    Outside the main thread (where handlers cannot be set) it never reports a stop."""

    def __init__(self, accelerator=None) -> None:
        self._accelerator = accelerator
        self.signum: int | None = None
        self._first_at = 0.0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:  # noqa: PYI034
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum, self._first_at = signum, time.monotonic()
            _say(f"thinkrl: {name}: finishing the step in progress, then saving a checkpoint "
                 f"(send it again to stop at once)")
        elif time.monotonic() - self._first_at > ECHO_WINDOW_S:
            _say(f"thinkrl: second {name}: stopping now; the last checkpoint written is kept")
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def requested(self) -> bool:
        """Whether to stop now. Under a launch every process must call it at the same step: it
        takes the largest signal number any of them received."""
        from thinkrl.train.distributed import max_over_processes

        signum = max_over_processes(self._accelerator, self.signum or 0)
        if signum and self.signum is None:  # another process was signalled
            self.signum = signum
        return bool(signum)


def interrupted(signum: int, step: int, run_dir: Path, command: str) -> TrainingInterrupted:
    """What a loop raises once it has saved the step it stopped at."""
    from thinkrl.processes import launched_processes
    from thinkrl.train.checkpoint import latest_checkpoint

    launch = " (under the same `accelerate launch`)" if launched_processes() > 1 else ""
    return TrainingInterrupted(signum, step, latest_checkpoint(run_dir),
                               f"thinkrl {command} {Path(run_dir) / 'config.yaml'} --resume{launch}")


def _say(text: str) -> None:
    """From a signal handler: one write, no locks (print could deadlock on a held stream lock)."""
    try:
        os.write(2, (text + "\n").encode())
    except OSError:
        pass
