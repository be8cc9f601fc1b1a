"""One way to build a rollout engine, for every command that samples (GRPO, sampling for
rejection sampling and distillation, evaluation): the transformers engine over a model in
this process, vLLM (colocated or a server), or an OpenAI-compatible endpoint.

What the trainer may ask of an engine is declared in rollout/base.py: `generate` always,
and `sync_weights`, `sleep`, `wake_up` for engines that hold their own copy of the weights
(`holds_own_weights`), instead of guessing from the engine's class.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field

from thinkrl.config import Config
from thinkrl.errors import ConfigError
from thinkrl.rollout.base import RolloutEngine
from thinkrl.rollout.vllm_engine import VLLMConfig


class EngineConfig(Config):
    """Which engine samples, and how many sequences it decodes at once."""

    engine: Literal["transformers", "vllm"] = Field("transformers", description="rollout engine: transformers "
                                                    "(thinkrl's decoding loop on CPU or one GPU, default) or vLLM "
                                                    "(GPU, pip install 'thinkrl[vllm]')")
    vllm: VLLMConfig = Field(VLLMConfig(), description="vLLM engine settings (engine=vllm)")
    batch_size: int = Field(256, ge=1, description="sequences per generate call")


class EndpointConfig(Config):
    """An OpenAI-compatible server to sample from (a teacher for distillation, vLLM, `thinkrl serve`)."""

    base_url: str = Field("http://127.0.0.1:8000/v1", description="server address, ending in /v1")
    model: str = Field("thinkrl/tiny", description="model id the server knows the model by")
    mode: Literal["completions", "chat"] = Field(
        "completions", description="completions: send the rendered prompt as is; chat: send it as one user "
        "message and let the server apply the model's chat template"
    )
    max_concurrency: int = Field(8, ge=1, description="requests in flight at once")
    api_key_env: str | None = Field(None, description="environment variable holding the API key (null: no key)")


def make_engine(cfg: EngineConfig, model_name: str, *, model: Any = None, tokenizer: Any = None,
                tokenizer_name: str | None = None, seed: int = 0, dtype: str = "float32", device: Any = None,
                endpoint: EndpointConfig | None = None, on_batch: Any = None) -> RolloutEngine:
    """The engine `cfg` names. transformers samples from `model` (loaded from `model_name`
    in `dtype` on `device` when not given); vLLM loads `model_name` itself (a local folder or
    a hub id in the local cache) and, colocated or as a server, is then kept in step by
    `sync_weights`; `endpoint` (when set) wins over both: requests to that server."""
    if endpoint is not None:
        from thinkrl.rollout.openai_engine import OpenAIEngine

        api_key = None
        if endpoint.api_key_env:
            api_key = os.environ.get(endpoint.api_key_env)
            if not api_key:
                raise ConfigError(f"endpoint.api_key_env names ${endpoint.api_key_env}, which is not set")
        return OpenAIEngine(endpoint.base_url, endpoint.model, api_key=api_key, mode=endpoint.mode,
                            max_concurrency=endpoint.max_concurrency)
    if cfg.engine == "vllm":
        from thinkrl.models import resolve_model_path
        from thinkrl.rollout.vllm_engine import VLLMEngine

        tokenizer_path = resolve_model_path(tokenizer_name) if tokenizer_name else None  # vLLM takes a path
        return VLLMEngine(resolve_model_path(model_name), cfg.vllm, tokenizer=tokenizer_path, seed=seed)
    from thinkrl.models import load_model, load_tokenizer
    from thinkrl.rollout.transformers_engine import TransformersEngine

    if model is None:
        model = load_model(model_name, dtype=dtype, device=device)
    if tokenizer is None:
        tokenizer = load_tokenizer(tokenizer_name or model_name)
    return TransformersEngine(model, tokenizer, batch_size=cfg.batch_size, on_batch=on_batch)
