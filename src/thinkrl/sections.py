"""Config sections shared by the commands that run a model without training it (eval,
sample, serve, demo, distill, pipeline), so one thing has one name in every command:
`model.name`, `model.dtype`, `model.device`, `run.output_dir`, `run.torch_threads`, `run.seed`
mean the same in `thinkrl eval` as in `thinkrl grpo`. A command subclasses a section to
change a default or a description, never to rename a field."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from thinkrl.config import Config

DType = Literal["float32", "bfloat16", "float16"]


class InferenceModelConfig(Config):
    """The checkpoint a command loads to generate with."""

    name: str = Field("thinkrl/tiny", description="local checkpoint folder or hub id (thinkrl/tiny: the embedded default)")
    dtype: DType = Field("float32", description="weights dtype")
    device: str = Field("auto", description="torch device (auto: cuda if available, else cpu)")


THREADS = "torch CPU threads (0: torch's default)"


class ThreadsRunConfig(Config):
    """The run section of a command that writes no run folder (serve)."""

    torch_threads: int = Field(0, ge=0, description=THREADS)


class OutputRunConfig(Config):
    """The run section of a command that writes a folder; subclasses set its default."""

    output_dir: str = Field("runs/out", description="output folder")
    torch_threads: int = Field(0, ge=0, description=THREADS)


def set_torch_threads(threads: int) -> None:
    """torch's intra-op threads for this process; 0 leaves torch's own choice."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def resolve_device(device: str) -> str:
    """'auto' -> cuda when a GPU is visible, else cpu; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
