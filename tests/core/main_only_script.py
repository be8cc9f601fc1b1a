"""Launched by test_processes on 2 CPU processes: `main_process_only` runs work once,
hands every process its result through heartbeats, and turns a failure on the main process
into an error everywhere. argv[1]: a folder for what each process saw."""

import json
import os
import sys
import time
from pathlib import Path

from thinkrl.errors import ThinkrlError
from thinkrl.processes import exit_when_done, main_process_only


def main() -> None:
    out = Path(sys.argv[1])
    rank = int(os.environ["RANK"])

    def slow_work() -> dict:
        with open(out / "ran", "a") as f:
            f.write(f"{rank}\n")
        time.sleep(1.0)  # twenty heartbeats
        return {"made_by": rank}

    got = main_process_only(slow_work, heartbeat_s=0.05)

    def failing_work() -> None:
        raise ValueError("bad row 7")

    try:
        main_process_only(failing_work, heartbeat_s=0.05)
        failure = None
    except ThinkrlError as exc:
        failure = f"ThinkrlError: {exc}"
    except ValueError as exc:
        failure = f"ValueError: {exc}"
    (out / f"rank{rank}.json").write_text(json.dumps({"got": got, "failure": failure}))


if __name__ == "__main__":
    exit_when_done(main)
