"""`thinkrl vllm-serve`: a rollout server for trainers on other GPUs or another node.

It holds one vLLM engine (all of its GPUs: no sleeping, no sharing with a trainer) and
answers the trainer's `VLLMEngine(mode="server")` over plain HTTP + JSON:

    GET  /health          -> {"ok": true, "model": ..., "backend": ..., "dtype": ...}
    POST /generate        {"prompts": [str], "params": {n, max_new_tokens, temperature,
                           top_p, seed, stop}} -> {"completions": [Completion fields]}
    POST /update_weights  body: a safetensors file of (name -> tensor), names as in the
                          Hugging Face checkpoint -> {"loaded": count}
    POST /sleep, /wake_up {"tags": [...]} -> {"ok": true}

Weights travel in requests of at most `rollout.vllm.sync_bucket_mb` (neither side holds a
second whole copy), all of them on the first sync and afterwards only those training can
change (a LoRA run sends its adapted modules' merged weights, not the frozen rest): the
simple price of not sharing a NCCL group with the trainer. The routes are unauthenticated: bind to a private interface (the default is loopback).
`backend=transformers` serves the same routes from transformers `generate` on CPU, to try
a setup end to end without a GPU.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Literal, Protocol

from pydantic import Field

from thinkrl.config import Config
from thinkrl.rollout.base import Completion, SamplingParams
from thinkrl.rollout.vllm_engine import VLLMConfig, VLLMEngine


class ServerVLLMConfig(VLLMConfig):
    """vLLM in a server that owns its GPUs: it takes most of their memory and never sleeps."""

    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="share of each GPU's memory vLLM takes "
                                          "(weights + KV cache); the server shares its GPUs with no trainer")
    enable_sleep_mode: bool = Field(False, description="free the KV cache between requests (a server has no "
                                    "trainer to make room for)")


class VLLMServeModelConfig(Config):
    name: str = Field("thinkrl/tiny", description="checkpoint to serve: the policy's starting weights "
                      "(local folder or hub id in the local cache)")
    tokenizer: str | None = Field(None, description="tokenizer folder or id (None: the model's)")


class VLLMServeConfig(Config):
    renamed: ClassVar[dict[str, str]] = {"model": "model.name", "tokenizer": "model.tokenizer"}

    model: VLLMServeModelConfig = VLLMServeModelConfig()
    backend: Literal["vllm", "transformers"] = Field("vllm", description="vllm (GPU) or transformers "
                                                     "(CPU, to try the routes without a GPU)")
    host: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0 for other nodes; routes are "
                      "unauthenticated, keep it on a private network)")
    port: int = Field(8000, ge=1, le=65535, description="TCP port")
    seed: int = Field(0, description="engine seed (each request also carries its own)")
    vllm: ServerVLLMConfig = Field(ServerVLLMConfig(), description="vLLM settings; the server owns its GPUs, so it "
                                   "takes most of their memory and never sleeps")


class ServedBackend(Protocol):
    weights_dtype: str  # the trainer casts what it sends to this ("auto": as trained)

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]: ...
    def load_weight_items(self, items: list[tuple[str, Any]]) -> int: ...
    def sleep(self) -> None: ...
    def wake_up(self, tags: tuple[str, ...] = ...) -> None: ...


class TransformersBackend:
    """The server's routes on transformers `generate` (CPU): same protocol, no vLLM."""

    def __init__(self, model: str, tokenizer: str | None = None) -> None:
        from thinkrl.models import load_model, load_tokenizer
        from thinkrl.rollout.transformers_engine import TransformersEngine

        self.model = load_model(model)
        self.engine = TransformersEngine(self.model, load_tokenizer(tokenizer or model))
        self.weights_dtype = str(self.model.dtype).removeprefix("torch.")

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        return self.engine.generate(prompts, params)

    def load_weight_items(self, items: list[tuple[str, Any]]) -> int:
        known = set(self.model.state_dict())
        unknown = [name for name, _ in items if name not in known]
        if unknown:
            raise ValueError(f"{len(unknown)} weight names unknown to the served model, e.g. {unknown[0]}")
        self.model.load_state_dict(dict(items), strict=False)
        return len(items)

    def sleep(self) -> None:
        """Nothing to free: generate allocates its cache per call."""

    def wake_up(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None:
        """Nothing was freed by sleep."""


def make_backend(cfg: VLLMServeConfig) -> ServedBackend:
    if cfg.backend == "transformers":
        return TransformersBackend(cfg.model.name, cfg.model.tokenizer)
    from thinkrl.models import resolve_model_path

    path = resolve_model_path(cfg.model.name)
    tokenizer = resolve_model_path(cfg.model.tokenizer) if cfg.model.tokenizer else None
    return VLLMEngine(path, cfg.vllm.model_copy(update={"mode": "colocate"}), tokenizer=tokenizer, seed=cfg.seed)


def serve(backend: ServedBackend, host: str = "127.0.0.1", port: int = 8000, name: str = "") -> ThreadingHTTPServer:
    """An HTTP server answering the routes above (not yet serving: call serve_forever)."""
    lock = threading.Lock()  # one engine, one request at a time

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                self._answer(200, {"ok": True, "model": name, "backend": type(backend).__name__,
                                   "dtype": backend.weights_dtype})
            else:
                self._answer(404, {"error": f"no route GET {self.path}"})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                with lock:
                    answer = self._route(body)
            except (ValueError, KeyError, TypeError) as exc:
                self._answer(400, {"error": f"{type(exc).__name__}: {exc}"})
                return
            if answer is None:
                self._answer(404, {"error": f"no route POST {self.path}"})
            else:
                self._answer(200, answer)

        def _route(self, body: bytes) -> dict[str, Any] | None:
            if self.path == "/update_weights":
                from safetensors.torch import load

                return {"loaded": backend.load_weight_items(list(load(body).items()))}
            request = json.loads(body or b"{}")
            if self.path == "/generate":
                params = request.get("params", {})
                sampling = SamplingParams(**{**params, "stop": tuple(params.get("stop", ()))})
                done = backend.generate(list(request["prompts"]), sampling)
                return {"completions": [vars(c) for c in done]}
            if self.path == "/sleep":
                backend.sleep()
                return {"ok": True}
            if self.path == "/wake_up":
                backend.wake_up(tuple(request.get("tags", ("weights", "kv_cache"))))
                return {"ok": True}
            return None

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)


def run_vllm_serve(cfg: VLLMServeConfig) -> None:
    """Entry point of `thinkrl vllm-serve`: load the engine, then serve until interrupted."""
    from rich.console import Console

    backend = make_backend(cfg)
    server = serve(backend, cfg.host, cfg.port, name=cfg.model.name)
    Console(stderr=True).print(f"serving {cfg.model.name} ({cfg.backend}) at http://{cfg.host}:{cfg.port}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
