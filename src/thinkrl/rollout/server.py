"""`thinkrl serve`: any checkpoint behind an OpenAI-compatible HTTP API (FastAPI + uvicorn).

A teacher for distillation, a judge, or a model under evaluation then looks to the rest of
thinkrl (and to any OpenAI client) like a hosted endpoint. Sampling is the ordinary
`TransformersEngine`; one model serves every request, so generation is serialised by a lock:
concurrent requests queue and never share a batch or a random stream. Bad requests get a 400
with an OpenAI-shaped JSON error, never a traceback; so does a request whose prompt tokens plus
max_tokens exceed the model's positions (vLLM's message), which would otherwise run past them.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from thinkrl.config import build_config
from thinkrl.data.context import model_positions
from thinkrl.errors import ThinkrlError
from thinkrl.rollout.base import Completion, SamplingParams
from thinkrl.rollout.serve_config import ServeConfig

log = logging.getLogger(__name__)


class _Sampling(BaseModel):
    """Fields shared by both endpoints; unknown OpenAI fields (user, logprobs, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    n: int = Field(1, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False


class CompletionRequest(_Sampling):
    prompt: str | list[str]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message text; a list of content parts keeps its text parts only."""
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class RequestError(Exception):
    """A request the server understood but will not run; becomes an OpenAI-shaped 4xx."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.param = message, status, param


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status_code=status)


class ModelServer:
    """One loaded model and the rules a request must follow to reach it."""

    def __init__(self, model: Any, tokenizer: Any, name: str, max_tokens_limit: int = 2048, batch_size: int = 64) -> None:
        from thinkrl.rollout.transformers_engine import TransformersEngine

        self.engine = TransformersEngine(model, tokenizer, batch_size=batch_size)
        self.tokenizer = tokenizer
        self.name = name
        self.max_tokens_limit = max_tokens_limit
        self.max_positions = model_positions(getattr(model, "config", None), tokenizer)
        self.lock = threading.Lock()  # one generate at a time: batches and seeded RNG stay per request

    def sampling(self, req: _Sampling, max_tokens: int | None, default_max_tokens: int) -> SamplingParams:
        if req.stream:
            raise RequestError("stream=true is not supported by thinkrl serve", param="stream")
        if req.model is not None and req.model != self.name:
            raise RequestError(f"model '{req.model}' is not served here; this server serves '{self.name}'", 404, "model")
        max_tokens = max_tokens if max_tokens is not None else min(default_max_tokens, self.max_tokens_limit)
        if max_tokens > self.max_tokens_limit:
            raise RequestError(f"max_tokens {max_tokens} is over this server's limit of {self.max_tokens_limit}", param="max_tokens")
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        return SamplingParams(n=req.n, max_new_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
                              seed=req.seed, stop=tuple(s for s in stop if s))

    def fit_context(self, prompts: list[str], params: SamplingParams, asked: bool, what: str) -> SamplingParams:
        """Prompt tokens + max_tokens must fit the model's positions: a request over them is a
        400 giving the limit (as vLLM answers); an unasked max_tokens shrinks to the room left."""
        if self.max_positions is None:
            return params
        limit = self.max_positions
        longest = max(len(self.engine.encode_prompt(p)) for p in prompts)
        if asked and longest + params.max_new_tokens > limit:
            raise RequestError(f"This model's maximum context length is {limit} tokens. However, you requested "
                               f"{longest + params.max_new_tokens} tokens ({longest} in the {what}, "
                               f"{params.max_new_tokens} in the completion). Please reduce the length of the "
                               f"{what} or completion.", param=what)
        if longest >= limit:
            raise RequestError(f"This model's maximum context length is {limit} tokens. However, you requested "
                               f"{longest} tokens in the {what}, which leaves no room for a completion. Please "
                               f"reduce the length of the {what}.", param=what)
        return dataclasses.replace(params, max_new_tokens=min(params.max_new_tokens, limit - longest))

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        with self.lock:
            return self.engine.generate(prompts, params)

    def chat_prompt(self, messages: list[ChatMessage]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise RequestError(f"model '{self.name}' has no chat template; use /v1/completions", param="messages")
        try:
            return self.tokenizer.apply_chat_template([{"role": m.role, "content": m.text()} for m in messages],
                                                      tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - a template that rejects these messages (e.g. no system role)
            raise RequestError(f"the chat template rejected these messages: {exc}", param="messages") from None


def _usage(completions: list[Completion], n: int) -> dict[str, int]:
    prompt_tokens = sum(len(c.prompt_ids) for c in completions[::n])  # each prompt counted once
    completion_tokens = sum(len(c.completion_ids) for c in completions)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def build_app(server: ModelServer) -> FastAPI:
    """The FastAPI app: /health, /v1/models, /v1/completions, /v1/chat/completions."""
    app = FastAPI(title="thinkrl serve")
    started = int(time.time())

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return _error(400, "the request body is not valid JSON")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"{where or 'body'}: {first.get('msg', 'invalid value')}", where or None)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request to %s failed", request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "model": server.name}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": server.name, "object": "model", "created": started, "owned_by": "thinkrl"}]}

    @app.post("/v1/completions")
    def completions(req: CompletionRequest) -> dict[str, Any]:
        # A plain `def` endpoint runs in the threadpool, so waiting for the lock never blocks the event loop.
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        if not prompts:
            raise RequestError("prompt must not be an empty list", param="prompt")
        params = server.sampling(req, req.max_tokens, default_max_tokens=16)  # 16: OpenAI's default
        params = server.fit_context(prompts, params, asked=req.max_tokens is not None, what="prompt")
        outs = server.generate(prompts, params)
        choices = [{"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
                   for i, c in enumerate(outs)]
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": server.name, "choices": choices, "usage": _usage(outs, params.n)}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest) -> dict[str, Any]:
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        params = server.sampling(req, max_tokens, default_max_tokens=server.max_tokens_limit)
        prompt = server.chat_prompt(req.messages)
        params = server.fit_context([prompt], params, asked=max_tokens is not None, what="messages")
        outs = server.generate([prompt], params)
        choices = [{"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                    "finish_reason": c.finish_reason} for i, c in enumerate(outs)]
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": server.name, "choices": choices, "usage": _usage(outs, params.n)}

    return app


def load_server(cfg: ServeConfig) -> ModelServer:
    """Load the checkpoint `cfg.model.name` names and wrap it for serving."""
    from thinkrl.models import load_model, load_tokenizer
    from thinkrl.sections import resolve_device, set_torch_threads

    set_torch_threads(cfg.run.torch_threads)
    model = load_model(cfg.model.name, dtype=cfg.model.dtype, device=resolve_device(cfg.model.device))
    return ModelServer(model, load_tokenizer(cfg.model.name), cfg.model_id(), cfg.max_tokens_limit, cfg.batch_size)


def run_serve(cfg: ServeConfig) -> None:
    """Serve `cfg.model.name` until interrupted (Ctrl+C)."""
    import uvicorn
    from rich.console import Console

    app = build_app(load_server(cfg))
    Console(stderr=True).print(f"serving '{cfg.model_id()}' at http://{cfg.host}:{cfg.port}/v1", soft_wrap=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ThinkrlError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


@contextmanager
def serve_app(app: Any, host: str = "127.0.0.1", port: int = 0, startup_timeout_s: float = 30.0) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a daemon thread; yields its root url ("http://HOST:PORT").

    We bind the socket ourselves, so port 0 gives a free port whose number we know before
    uvicorn starts. Leaving the block stops the server and waits for it.
    """
    import uvicorn

    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{bound}")
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise ThinkrlError(f"the server on {host}:{bound} did not start")
            time.sleep(0.02)
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _wait_healthy(url: str, timeout_s: float) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy: it is local
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ThinkrlError(f"{url} did not answer within {timeout_s:.0f} s")
        time.sleep(0.05)


@contextmanager
def serve_in_background(model: str, host: str = "127.0.0.1", port: int = 0, **cfg: Any) -> Iterator[str]:
    """Serve checkpoint `model` (other ServeConfig fields as keywords) while the block runs;
    yields the OpenAI base url ("http://127.0.0.1:PORT/v1") once /health answers."""
    config = build_config(ServeConfig, {"model": {"name": model}, "host": host, "port": port, **cfg})
    app = build_app(load_server(config))
    with serve_app(app, host, port) as root:
        _wait_healthy(f"{root}/health", timeout_s=30)
        yield f"{root}/v1"


__all__ = ["ModelServer", "build_app", "load_server", "run_serve", "serve_app", "serve_in_background"]
