"""`thinkrl serve` never runs past the model's positions: a request whose prompt tokens plus
max_tokens exceed them gets a 400 giving the limit (vLLM's message); without max_tokens the
completion is capped to the room left."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from thinkrl.models import load_tokenizer
from thinkrl.rollout.server import serve_in_background

# The tiny random model has 256 positions and a one-token-per-character tokenizer with a bos.
POSITIONS = 256


@pytest.fixture(scope="module")
def served(tiny_random_model):
    with serve_in_background(str(tiny_random_model), served_model_name="tiny-random", max_tokens_limit=64) as url:
        yield url


@pytest.fixture(scope="module")
def tokens(tiny_random_model):
    tokenizer = load_tokenizer(str(tiny_random_model))
    return lambda text: 1 + len(tokenizer(text, add_special_tokens=False)["input_ids"])  # bos in front


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_completion_over_the_context_is_a_400_giving_the_limit(served, tokens) -> None:
    prompt = "1+2=" * 60  # 240 characters
    status, body = post(f"{served}/completions", {"prompt": prompt, "max_tokens": 20})
    assert status == 400
    assert body["error"]["message"] == (
        f"This model's maximum context length is {POSITIONS} tokens. However, you requested "
        f"{tokens(prompt) + 20} tokens ({tokens(prompt)} in the prompt, 20 in the completion). "
        "Please reduce the length of the prompt or completion.")
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == "prompt"

    status, body = post(f"{served}/completions", {"prompt": ["1+1=", prompt], "max_tokens": 20})
    assert status == 400 and f"({tokens(prompt)} in the prompt" in body["error"]["message"]  # any prompt over: 400

    room = POSITIONS - tokens(prompt)
    status, body = post(f"{served}/completions", {"prompt": prompt, "max_tokens": room, "temperature": 0})
    assert status == 200 and body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] <= POSITIONS


def test_chat_over_the_context_is_a_400_and_an_unset_max_tokens_fits_the_room(served, tokens) -> None:
    content = "7" * 230
    status, body = post(f"{served}/chat/completions",
                        {"messages": [{"role": "user", "content": content}], "max_tokens": 64})
    assert status == 400
    message = body["error"]["message"]
    assert message.startswith(f"This model's maximum context length is {POSITIONS} tokens. However, you requested ")
    assert "in the messages, 64 in the completion)" in message and body["error"]["param"] == "messages"

    # No max_tokens: the server's default (64) would not fit, so the answer is capped to the room left.
    status, body = post(f"{served}/chat/completions",
                        {"messages": [{"role": "user", "content": content}], "temperature": 0})
    assert status == 200
    usage = body["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= POSITIONS and usage["completion_tokens"] < 64


def test_a_prompt_that_fills_the_context_alone_is_a_400(served) -> None:
    status, body = post(f"{served}/completions", {"prompt": "9" * 300})
    assert status == 400
    assert body["error"]["message"] == (
        f"This model's maximum context length is {POSITIONS} tokens. However, you requested 301 tokens in the "
        "prompt, which leaves no room for a completion. Please reduce the length of the prompt.")
