"""Settings of `thinkrl serve`: which checkpoint to serve, where, and the limits a request must respect."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from thinkrl.config import Config
from thinkrl.sections import DType, InferenceModelConfig, ThreadsRunConfig


class ServeModelConfig(InferenceModelConfig):
    name: str = Field("thinkrl/tiny", description="checkpoint to serve: a local folder, a hub id in the local "
                      "cache, or thinkrl/tiny")
    dtype: DType = Field("float32", description="weight dtype (float32 on CPU)")
    device: str = Field("cpu", description="torch device to run the model on (cpu, cuda, cuda:1, auto: cuda if "
                        "available)")


class ServeConfig(Config):
    """An OpenAI-compatible HTTP server over one checkpoint (teacher, judge, or a model under test)."""

    renamed: ClassVar[dict[str, str]] = {"model": "model.name", "dtype": "model.dtype", "device": "model.device",
                                         "torch_threads": "run.torch_threads"}

    model: ServeModelConfig = ServeModelConfig()
    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 exposes the server to the network)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on (0 picks a free one)")
    served_model_name: str | None = Field(None, description="model id clients must send and /v1/models lists "
                                          "(default: model.name)")
    max_tokens_limit: int = Field(2048, ge=1, description="largest max_tokens a request may ask for (bigger requests get a 400)")
    batch_size: int = Field(64, ge=1, description="sequences (prompts x n) per model.generate call")
    run: ThreadsRunConfig = ThreadsRunConfig()

    def model_id(self) -> str:
        """The name clients address the model by."""
        return self.served_model_name or self.model.name
