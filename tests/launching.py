"""Launching a training script on 2 CPU processes the way users launch on GPUs, for the tests
that check a multi-process run ends where one process ends.

DDP: accelerate's `--cpu` flag starts a single process (accelerate#2741), so the launch goes
through torchrun (`--multi_gpu`) with ACCELERATE_USE_CPU=1, which picks the CPU and gloo.
FSDP: the shipped configs/accelerate/fsdp.yaml itself, with `fsdp_on_cpu` run first in each
process (the launched script calls it when FSDP_ON_CPU=1)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FSDP_CONFIG = REPO / "configs" / "accelerate" / "fsdp.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two(script: Path | str, args: list[str], env: dict[str, str], sharding: str = "ddp") -> subprocess.CompletedProcess:
    """`accelerate launch` `script` (a file, or `-m module`) on 2 CPU processes, DDP or FSDP (`sharding`)."""
    env = script_env(env)
    if sharding == "fsdp":
        env["FSDP_ON_CPU"] = "1"
        how = ["--config_file", str(FSDP_CONFIG), "--mixed_precision", "no"]
    else:
        env["ACCELERATE_USE_CPU"] = "1"
        how = ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", *how, "--num_processes", "2",
               "--main_process_port", str(free_port()), *str(script).split(" ", 1), *args]
    return subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=300)


def script_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a launched test script: one thread, and this folder importable."""
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **(extra or {})}


def fsdp_on_cpu() -> None:
    """accelerate turns an FSDP launch into FSDP only on accelerator machines (its state module
    lists GPU-like types), and this machine has none. So: start the gloo process group as a
    CPU launch, then let accelerate take it for a GPU launch; from there it reads the FSDP
    config and wraps the model with FSDP2 exactly as on GPUs (FSDP2 itself runs on CPU)."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    PartialState(cpu=True)
    PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU


def record_world(path: str | None) -> None:
    """Append 'processes:launch type' as this process saw them, so a test knows the launch was real."""
    if not path:
        return
    from accelerate.state import AcceleratorState

    state = AcceleratorState()
    with open(path, "a") as f:
        f.write(f"{state.num_processes}:{state.distributed_type.value}\n")
