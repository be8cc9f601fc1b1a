"""`thinkrl serve` over a tiny random Llama, called with the real openai client and raw HTTP."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest

from thinkrl.config import load_config
from thinkrl.errors import ConfigError
from thinkrl.models import load_model, load_tokenizer
from thinkrl.rollout.base import SamplingParams
from thinkrl.rollout.serve_config import ServeConfig
from thinkrl.rollout.server import serve_in_background
from thinkrl.rollout.transformers_engine import TransformersEngine

PROMPT = "User: 12+7=?. Assistant:"


@pytest.fixture(scope="module")
def served(tiny_random_model):
    with serve_in_background(str(tiny_random_model), served_model_name="tiny-random", max_tokens_limit=64) as url:
        yield url


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served, api_key="EMPTY", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def direct(tiny_random_model):
    """The same checkpoint sampled in-process: what the server must reproduce."""
    return TransformersEngine(load_model(str(tiny_random_model)), load_tokenizer(str(tiny_random_model)))


def post(url: str, body: object) -> tuple[int, dict]:
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_health_and_models_list_the_served_name(served):
    with urllib.request.urlopen(served.removesuffix("/v1") + "/health", timeout=10) as response:
        assert json.loads(response.read())["status"] == "ok"
    models = openai.OpenAI(base_url=served, api_key="EMPTY").models.list()
    assert [m.id for m in models.data] == ["tiny-random"]


def test_n_choices_usage_and_length_finish(client, direct):
    out = client.completions.create(model="tiny-random", prompt=PROMPT, n=3, max_tokens=4, temperature=1.0, seed=3)
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in out.choices)  # a random model does not stop in 4 tokens
    assert out.usage.prompt_tokens == len(direct.encode_prompt(PROMPT))
    assert out.usage.completion_tokens == 3 * 4
    assert out.object == "text_completion" and out.model == "tiny-random" and out.id.startswith("cmpl-")


def test_greedy_and_seeded_sampling_match_the_engine_run_directly(client, direct):
    greedy = [client.completions.create(model="tiny-random", prompt=PROMPT, max_tokens=12, temperature=0, seed=1)
              for _ in range(2)]
    expected = direct.generate([PROMPT], SamplingParams(n=1, max_new_tokens=12, temperature=0.0, seed=1))[0]
    assert greedy[0].choices[0].text == greedy[1].choices[0].text == expected.text
    assert greedy[0].choices[0].finish_reason == expected.finish_reason

    sampled = client.completions.create(model="tiny-random", prompt=[PROMPT, "Hi"], n=2, max_tokens=10,
                                        temperature=1.0, top_p=0.9, seed=7)
    want = direct.generate([PROMPT, "Hi"], SamplingParams(n=2, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7))
    assert [c.text for c in sampled.choices] == [c.text for c in want]
    assert len({c.text for c in sampled.choices}) > 1  # temperature 1: the samples differ


def test_stop_strings_cut_the_text(client, direct):
    full = direct.generate([PROMPT], SamplingParams(n=1, max_new_tokens=20, temperature=0.0))[0].text
    stop = full[5:7]
    out = client.completions.create(model="tiny-random", prompt=PROMPT, max_tokens=20, temperature=0, stop=[stop])
    assert out.choices[0].text == full[:full.index(stop) + len(stop)]
    assert out.choices[0].finish_reason == "stop"


def test_chat_applies_the_chat_template(client, direct):
    messages = [{"role": "user", "content": "What is 3+4"}]
    out = client.chat.completions.create(model="tiny-random", messages=messages, max_tokens=10, temperature=0)
    templated = direct.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert templated.endswith("User: What is 3+4. Assistant:")
    expected = direct.generate([templated], SamplingParams(n=1, max_new_tokens=10, temperature=0.0))[0]
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == expected.text
    assert out.usage.prompt_tokens == len(expected.prompt_ids)
    assert out.object == "chat.completion"


@pytest.mark.parametrize("body, field", [
    ({"prompt": "x", "n": 0}, "n"),
    ({"max_tokens": 3}, "prompt"),
    ({"prompt": "x", "temperature": -1}, "temperature"),
    ({"prompt": "x", "max_tokens": 65}, "max_tokens"),
    ({"prompt": []}, "prompt"),
    ({"prompt": "x", "stream": True}, "stream"),
])
def test_bad_completion_requests_get_a_400_json_error(served, body, field):
    status, reply = post(served + "/completions", body)
    assert status == 400
    assert reply["error"]["param"] == field and reply["error"]["message"]


def test_other_bad_requests_are_json_errors_too(served, client):
    assert post(served + "/completions", "{not json")[0] == 400
    assert post(served + "/chat/completions", {"messages": []})[0] == 400
    status, reply = post(served + "/completions", {"prompt": "x", "model": "gpt-4"})
    assert status == 404 and "tiny-random" in reply["error"]["message"]
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny-random", prompt="x", n=0)


def test_concurrent_requests_are_all_answered_uncorrupted(client, direct):
    seeds = list(range(6))
    answers: dict[int, str] = {}

    def ask(seed: int) -> None:
        out = client.completions.create(model="tiny-random", prompt=PROMPT, max_tokens=8, temperature=1.0, seed=seed)
        answers[seed] = out.choices[0].text

    threads = [threading.Thread(target=ask, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    # Each seeded answer equals the one sampled alone: no request saw another's batch or RNG.
    expected = {s: direct.generate([PROMPT], SamplingParams(n=1, max_new_tokens=8, temperature=1.0, seed=s))[0].text
                for s in seeds}
    assert answers == expected


def test_serve_config_rejects_bad_fields():
    assert load_config(ServeConfig).model_id() == "thinkrl/tiny"
    with pytest.raises(ConfigError, match="port"):
        load_config(ServeConfig, overrides=["port=70000"])
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        load_config(ServeConfig, overrides=["batchsize=2"])
    assert load_config(ServeConfig, overrides=["model.name=m", "model.device=auto"]).model_id() == "m"
    with pytest.raises(ConfigError, match=r"^config field 'model' is now 'model.name' \(--set model.name=m\)$"):
        load_config(ServeConfig, overrides=["model=m"])
    with pytest.raises(ConfigError, match="'torch_threads' is now 'run.torch_threads'"):
        load_config(ServeConfig, overrides=["torch_threads=2"])


def test_run_serve_blocks_serving_until_interrupted(tiny_random_model):
    """The CLI entry point, in a real subprocess: it answers, then stops cleanly on Ctrl+C."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = ("import torch; torch.set_num_threads(1)\n"
            "from thinkrl.rollout.serve_config import ServeConfig\n"
            "from thinkrl.rollout.server import run_serve\n"
            f"run_serve(ServeConfig(model={{'name': {str(tiny_random_model)!r}}}, port={port}, "
            "served_model_name='cli', run={'torch_threads': 1}))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    assert json.loads(response.read())["model"] == "cli"
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "run_serve did not come up"
                time.sleep(0.1)
        out = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="EMPTY").completions.create(
            model="cli", prompt="Hi", max_tokens=3, temperature=0)
        assert out.choices[0].finish_reason in ("stop", "length")
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    assert f"http://127.0.0.1:{port}/v1" in output
