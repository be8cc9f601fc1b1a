"""Rollouts from any OpenAI-compatible endpoint (`thinkrl serve`, vLLM, a hosted API): a
teacher for distillation, a judge, or a remote model under evaluation.

Retries with exponential backoff are the `openai` client's own: it retries connection
errors, timeouts, 408/409/429 and 5xx `max_retries` times, waiting 0.5 s x 2^k (capped at
8 s, with jitter, or what a Retry-After header asks). We add only the bounded concurrency.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Literal, TypeVar

from thinkrl.errors import ThinkrlError
from thinkrl.rollout.base import Completion, SamplingParams

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(fn: Callable[[T], R], items: Sequence[T], max_concurrency: int) -> list[R]:
    """`[fn(x) for x in items]` with at most `max_concurrency` calls in flight, results in order.

    The first exception cancels the calls not yet started and is raised.
    """
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    if len(items) <= 1 or max_concurrency == 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(max_concurrency, len(items))) as pool:
        futures: list[Future[R]] = [pool.submit(fn, x) for x in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _finish_reason(reason: str | None) -> str:
    """OpenAI's reasons onto ours: only "length" means truncated; eos, stop strings,
    content filters and tool calls all ended the text on the endpoint's own terms."""
    return "length" if reason == "length" else "stop"


class OpenAIEngine:
    """The RolloutEngine protocol over HTTP, with the `openai` client.

    One request per prompt (carrying `n`), at most `max_concurrency` in flight. An endpoint
    returns text, not token ids, so `Completion.prompt_ids` and `completion_ids` stay empty:
    use this engine to collect text (distillation data, judging, evaluation), not for the
    policy's own rollouts in GRPO, which need the ids. In "chat" mode each prompt is sent as
    the user message and the endpoint applies its chat template.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 mode: Literal["completions", "chat"] = "completions", max_concurrency: int = 8,
                 max_retries: int = 4, timeout_s: float = 120.0) -> None:
        import openai

        if mode not in ("completions", "chat"):
            raise ValueError(f"mode must be 'completions' or 'chat', got {mode!r}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.mode = mode
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        # Only the key the caller chose: falling back to $OPENAI_API_KEY would send it to whatever
        # endpoint this is. Local servers want any non-empty key.
        key = api_key or "EMPTY"
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=max_retries, timeout=timeout_s)

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        """len(prompts) * params.n completions, grouped by prompt in order (text only, no token ids)."""
        _check(params)
        groups = bounded_map(lambda prompt: self._sample(prompt, params), prompts, self.max_concurrency)
        return [Completion(prompt_index=i, text=text, finish_reason=reason)
                for i, group in enumerate(groups) for text, reason in group]

    def chat(self, conversations: list[list[dict[str, Any]]], params: SamplingParams) -> list[str]:
        """One assistant reply per conversation (`params.n` is ignored)."""
        one = replace(params, n=1)
        _check(one)
        return bounded_map(lambda messages: self.chat_one(messages, one), conversations, self.max_concurrency)

    def chat_one(self, messages: list[dict[str, Any]], params: SamplingParams) -> str:
        """The first reply to one conversation; a failed request raises ThinkrlError."""
        return self.chat_reply(messages, params)[0]

    def chat_reply(self, messages: list[dict[str, Any]], params: SamplingParams) -> tuple[str, str | None]:
        """(text, finish_reason as the endpoint sent it) of the first reply: callers that must
        tell a finished reply from one cut off by max_tokens ("length") read the reason."""
        with self._errors():
            response = self.client.chat.completions.create(model=self.model, messages=messages, **_request_args(params))
        if not response.choices:
            raise ThinkrlError(f"endpoint {self.base_url} returned no choices")
        choice = response.choices[0]
        return choice.message.content or "", choice.finish_reason

    def _sample(self, prompt: str, params: SamplingParams) -> list[tuple[str, str]]:
        args = _request_args(params)
        with self._errors():
            if self.mode == "chat":
                response = self.client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": prompt}], **args)
                choices = [(c.index, c.message.content or "", c.finish_reason) for c in response.choices]
            else:
                response = self.client.completions.create(model=self.model, prompt=prompt, **args)
                choices = [(c.index, c.text or "", c.finish_reason) for c in response.choices]
        if len(choices) != params.n:
            raise ThinkrlError(f"endpoint {self.base_url} returned {len(choices)} choices for n={params.n}")
        return [(text, _finish_reason(reason)) for _, text, reason in sorted(choices, key=lambda c: c[0])]

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """The client's exceptions as one-line ThinkrlErrors naming the endpoint."""
        import openai

        try:
            yield
        except openai.APITimeoutError:
            raise ThinkrlError(f"OpenAI-compatible endpoint {self.base_url} timed out "
                               f"(after {self.max_retries} retries)") from None
        except openai.APIConnectionError as exc:
            cause = _one_line(exc.__cause__ or exc, 160)
            raise ThinkrlError(f"cannot reach OpenAI-compatible endpoint {self.base_url} "
                               f"(after {self.max_retries} retries): {cause}") from None
        except openai.APIStatusError as exc:
            body = exc.body.get("message", exc.body) if isinstance(exc.body, dict) else exc.body
            raise ThinkrlError(f"endpoint {self.base_url} answered HTTP {exc.status_code}: "
                               f"{_one_line(body if body is not None else exc.message)}") from None


def _check(params: SamplingParams) -> None:
    if params.n < 1 or params.max_new_tokens < 1 or params.temperature < 0:
        raise ValueError(f"need n >= 1, max_new_tokens >= 1 and temperature >= 0, got {params}")


def _request_args(params: SamplingParams) -> dict[str, Any]:
    """Sampling settings as request fields. `max_tokens` (not `max_completion_tokens`) for chat
    too: every OpenAI-compatible server reads it. Optional fields are sent only when set,
    since some endpoints reject `n` or `seed` they do not support."""
    args: dict[str, Any] = {"max_tokens": params.max_new_tokens, "temperature": params.temperature}
    if params.temperature > 0 and params.top_p < 1:
        args["top_p"] = params.top_p
    if params.n > 1:
        args["n"] = params.n
    if params.seed is not None:
        args["seed"] = params.seed
    stops = [s for s in params.stop if s]
    if stops:
        args["stop"] = stops
    return args


__all__ = ["OpenAIEngine", "bounded_map"]
