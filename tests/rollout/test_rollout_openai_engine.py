"""OpenAIEngine against a real `thinkrl serve` (tiny random Llama) and against a dead port."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from thinkrl.errors import ThinkrlError
from thinkrl.models import load_model, load_tokenizer
from thinkrl.rollout.base import SamplingParams
from thinkrl.rollout.openai_engine import OpenAIEngine, bounded_map
from thinkrl.rollout.server import serve_in_background
from thinkrl.rollout.transformers_engine import TransformersEngine

PROMPTS = ["User: 1+1=?. Assistant:", "Hello", "User: name a color. Assistant:"]


@pytest.fixture(scope="module")
def served(tiny_random_model):
    with serve_in_background(str(tiny_random_model), served_model_name="tiny") as url:
        yield url


@pytest.fixture(scope="module")
def direct(tiny_random_model):
    return TransformersEngine(load_model(str(tiny_random_model)), load_tokenizer(str(tiny_random_model)))


def greedy(n: int = 1, max_new_tokens: int = 10) -> SamplingParams:
    return SamplingParams(n=n, max_new_tokens=max_new_tokens, temperature=0.0)


def test_completions_are_grouped_by_prompt_in_order(served, direct):
    engine = OpenAIEngine(served, "tiny", max_concurrency=3)
    out = engine.generate(PROMPTS, greedy(n=2))
    assert [c.prompt_index for c in out] == [0, 0, 1, 1, 2, 2]
    want = direct.generate(PROMPTS, greedy(n=2))
    assert [c.text for c in out] == [c.text for c in want]
    assert [c.finish_reason for c in out] == [c.finish_reason for c in want]
    assert all(c.completion_ids == [] and c.prompt_ids == [] for c in out)  # an endpoint gives text only


def test_sampled_n_and_seed_reach_the_server(served, direct):
    params = SamplingParams(n=3, max_new_tokens=6, temperature=1.0, seed=11)
    out = OpenAIEngine(served, "tiny").generate(PROMPTS[:2], params)
    assert len(out) == 6 and [c.prompt_index for c in out] == [0, 0, 0, 1, 1, 1]
    # One request per prompt, each seeded: the same as sampling each prompt alone in-process.
    want = [c for p in PROMPTS[:2] for c in direct.generate([p], params)]
    assert [c.text for c in out] == [c.text for c in want]
    assert [c.finish_reason for c in out] == [c.finish_reason for c in want]


def test_chat_mode_sends_the_prompt_as_the_user_message(served, direct):
    engine = OpenAIEngine(served, "tiny", mode="chat")
    out = engine.generate(["What is 2+2"], greedy())
    templated = direct.tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+2"}], tokenize=False,
                                                     add_generation_prompt=True)
    assert out[0].text == direct.generate([templated], greedy())[0].text
    replies = engine.chat([[{"role": "user", "content": "What is 2+2"}], [{"role": "user", "content": "Hi"}]],
                          greedy(n=5))
    assert len(replies) == 2 and replies[0] == out[0].text and isinstance(replies[1], str)


def test_endpoint_errors_are_one_line(served):
    with pytest.raises(ThinkrlError, match="HTTP 404") as err:
        OpenAIEngine(served, "no-such-model", max_retries=0).generate(["x"], greedy())
    assert "\n" not in str(err.value) and served in str(err.value)


def test_unreachable_endpoint_fails_fast_with_one_line_naming_the_url():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    engine = OpenAIEngine(url, "m", max_retries=1, timeout_s=2.0)
    start = time.monotonic()
    with pytest.raises(ThinkrlError) as err:
        engine.generate(["a", "b"], greedy())
    assert time.monotonic() - start < 8
    message = str(err.value)
    assert url in message and "\n" not in message and "1 retries" in message


def test_bounded_map_keeps_order_and_the_bound():
    in_flight, peak, lock = [0], [0], threading.Lock()

    def work(x: int) -> int:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.02)
        with lock:
            in_flight[0] -= 1
        return x * x

    assert bounded_map(work, list(range(12)), max_concurrency=3) == [x * x for x in range(12)]
    assert 2 <= peak[0] <= 3
    with pytest.raises(ZeroDivisionError):
        bounded_map(lambda x: 1 // x, [1, 0, 2], max_concurrency=2)
