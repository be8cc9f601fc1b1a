"""The vLLM engine. Without vLLM or a GPU (CI) the parts that need neither still run for
real: the one-line error, the LoRA-merged weights in vLLM's names, and server mode's
HTTP protocol against `thinkrl vllm-serve`'s transformers backend on loopback. The
in-process vLLM tests run only where vllm and CUDA are present."""

from __future__ import annotations

import copy
import importlib.util
import threading

import pytest
import torch

from thinkrl.errors import ThinkrlError
from thinkrl.rollout.base import SamplingParams, holds_own_weights
from thinkrl.rollout.vllm_engine import NEEDS_VLLM, VLLMConfig, VLLMEngine
from thinkrl.rollout.vllm_server import TransformersBackend, serve
from thinkrl.rollout.weights import base_weight_name, merged_weights

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
HAVE_GPU_VLLM = HAVE_VLLM and torch.cuda.is_available()
needs_gpu_vllm = pytest.mark.skipif(not HAVE_GPU_VLLM, reason="needs vllm and a CUDA GPU (pip install 'thinkrl[vllm]')")

PROMPTS = ["2 + 3 =", "the cat"]


@pytest.mark.skipif(HAVE_VLLM, reason="vllm is installed here; the missing-vllm error cannot be seen")
def test_colocate_without_vllm_is_one_clear_line(tiny_random_model):
    with pytest.raises(ThinkrlError) as err:
        VLLMEngine(str(tiny_random_model))
    assert str(err.value) == NEEDS_VLLM == "rollout.engine=vllm needs vLLM: pip install 'thinkrl[vllm]' (a CUDA machine)"


@pytest.mark.parametrize("key, expected", [
    ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.weight"),
    ("module.model.norm.weight", "model.norm.weight"),
    ("_orig_mod.lm_head.weight", "lm_head.weight"),
    ("base_model.model.model.layers.1.mlp.up_proj.base_layer.weight", "model.layers.1.mlp.up_proj.weight"),
    ("base_model.model.model.layers.1.mlp.up_proj.base_layer.bias", "model.layers.1.mlp.up_proj.bias"),
    ("base_model.model.model.layers.1.mlp.up_proj.lora_A.default.weight", None),
    ("base_model.model.model.layers.1.mlp.up_proj.lora_B.default.weight", None),
    ("base_model.model.lm_head.modules_to_save.default.weight", "lm_head.weight"),
    ("base_model.model.lm_head.original_module.weight", None),
])
def test_weight_names_are_the_base_checkpoints(key, expected):
    assert base_weight_name(key) == expected


def _lora_policy(folder):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    policy = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():  # a trained adapter: B is no longer zero, so merging changes the weights
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return policy


def test_lora_policy_is_merged_for_the_copy_and_unmerged_after(tiny_random_model):
    policy = _lora_policy(tiny_random_model)
    ids = torch.tensor([[3, 5, 7, 9]])
    before = policy(input_ids=ids).logits
    expected = copy.deepcopy(policy).merge_and_unload().state_dict()
    base_names = set(expected)
    with merged_weights(policy) as items:
        got = {name: tensor.clone() for name, tensor in items}
    assert set(got) == base_names  # every base tensor, under the base checkpoint's name, nothing else
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(got[q], policy.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight)
    torch.testing.assert_close(policy(input_ids=ids).logits, before)  # adapter unmerged again


def test_tied_head_is_not_sent_twice(tmp_path):
    from conftest import build_tiny_random_model
    from transformers import AutoModelForCausalLM

    folder = build_tiny_random_model(tmp_path / "qwen", arch="qwen2")
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.config.tie_word_embeddings = True
    with merged_weights(model) as items:
        names = [name for name, _ in items]
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names


def test_weights_travel_to_a_server_in_its_dtype(tiny_random_model, monkeypatch):
    """fp32 master weights go to a bf16 server as bf16: half the upload."""
    from safetensors.torch import load
    from transformers import AutoModelForCausalLM

    from thinkrl.rollout.vllm_engine import ServerClient

    bodies = []
    monkeypatch.setattr(ServerClient, "request", lambda self, method, route, data=None, content_type=None:
                        bodies.append(data) or {"loaded": len(load(data))})
    model = AutoModelForCausalLM.from_pretrained(tiny_random_model, dtype=torch.float32)
    with merged_weights(model) as items:
        ServerClient("http://unused", 1).update_weights(items, torch.bfloat16)
    sent = load(bodies[0])
    for name, tensor in sent.items():
        assert tensor.dtype == torch.bfloat16
        torch.testing.assert_close(tensor, model.state_dict()[name].to(torch.bfloat16))


@pytest.fixture
def rollout_server(tiny_random_model):
    backend = TransformersBackend(str(tiny_random_model))
    server = serve(backend, "127.0.0.1", 0, name="tiny")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", backend
    server.shutdown()
    server.server_close()


def test_server_mode_generates_syncs_weights_sleeps_and_wakes(rollout_server, tiny_random_model):
    from transformers import AutoModelForCausalLM

    url, backend = rollout_server
    engine = VLLMEngine("unused-in-server-mode", VLLMConfig(mode="server", server_url=url, server_timeout_s=30))
    assert engine.weights_dtype == "float32"  # the server's (CPU, fp32), not the bf16 of VLLMConfig
    assert holds_own_weights(engine) and not holds_own_weights(backend.engine)  # the trainer syncs it, not that
    greedy = SamplingParams(n=2, max_new_tokens=8, temperature=0.0)
    first = engine.generate(PROMPTS, greedy)
    assert [c.prompt_index for c in first] == [0, 0, 1, 1]
    local = backend.engine.generate(PROMPTS, greedy)
    assert [(c.text, c.prompt_ids, c.completion_ids, c.finish_reason) for c in first] == \
        [(c.text, c.prompt_ids, c.completion_ids, c.finish_reason) for c in local]

    policy = AutoModelForCausalLM.from_pretrained(tiny_random_model)
    torch.manual_seed(0)
    with torch.no_grad():  # an "optimiser step" big enough to change greedy outputs
        for param in policy.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    sent = engine.sync_weights(policy)
    assert sent == sum(t.numel() * t.element_size() for t in policy.state_dict().values())  # bytes, fp32
    after = engine.generate(PROMPTS, greedy)
    assert [c.completion_ids for c in after] != [c.completion_ids for c in first]
    torch.testing.assert_close(backend.model.state_dict()["model.norm.weight"], policy.state_dict()["model.norm.weight"])

    engine.sleep()
    engine.wake_up()
    engine.sync_weights(AutoModelForCausalLM.from_pretrained(tiny_random_model))  # back to the start
    assert [c.completion_ids for c in engine.generate(PROMPTS, greedy)] == [c.completion_ids for c in first]


def test_server_rejects_weights_the_model_does_not_have(rollout_server):
    url, _ = rollout_server
    engine = VLLMEngine("unused", VLLMConfig(mode="server", server_url=url, server_timeout_s=30))
    stranger = torch.nn.Linear(2, 2)
    with pytest.raises(ThinkrlError, match="400.*unknown to the served model"):
        engine.sync_weights(stranger)


def test_server_mode_uploads_from_the_main_process_only(rollout_server, tiny_random_model, monkeypatch):
    """Under a launch every process syncs (FSDP gathers need them all), one uploads: 8 processes
    must not send the model 8 times."""
    from transformers import AutoModelForCausalLM

    url, backend = rollout_server
    engine = VLLMEngine("unused", VLLMConfig(mode="server", server_url=url, server_timeout_s=30))
    before = backend.model.state_dict()["model.norm.weight"].clone()
    policy = AutoModelForCausalLM.from_pretrained(tiny_random_model)
    with torch.no_grad():
        policy.model.norm.weight.add_(1.0)
    monkeypatch.setenv("RANK", "1")
    assert engine.sync_weights(policy) == 0
    torch.testing.assert_close(backend.model.state_dict()["model.norm.weight"], before)


def test_tensor_parallel_engines_under_a_launch_are_refused(monkeypatch):
    """Each training process samples its own prompts; a tensor-parallel group would need the same."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # _llm_kwargs sets it; restored after
    engine = VLLMEngine.__new__(VLLMEngine)
    engine.config, engine.seed = VLLMConfig(tensor_parallel_size=2), 0
    with pytest.raises(ThinkrlError, match="not supported"):
        engine._llm_kwargs("some/model", None)
    engine.config = VLLMConfig(tensor_parallel_size=1)
    assert engine._llm_kwargs("some/model", None)["distributed_executor_backend"] == "external_launcher"


def test_no_server_is_one_line_error():
    with pytest.raises(ThinkrlError) as err:
        VLLMEngine("unused", VLLMConfig(mode="server", server_url="http://127.0.0.1:9", server_timeout_s=1))
    assert "\n" not in str(err.value) and "thinkrl vllm-serve" in str(err.value)


# ---------------------------------------------------------------- in-process vLLM (GPU only)

def _vllm_sized_model(folder):
    """A random 2-layer Qwen2 with the tiny char tokenizer and a head size vLLM's attention
    kernels support (64; the shared tiny fixture's 8 is below their minimum)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from thinkrl.tiny.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def colocated(tmp_path_factory):
    folder = _vllm_sized_model(tmp_path_factory.mktemp("vllm-tiny"))
    engine = VLLMEngine(str(folder), VLLMConfig(gpu_memory_utilization=0.2, enforce_eager=True, max_model_len=256))
    return folder, engine


@needs_gpu_vllm
def test_vllm_generates_groups_with_token_ids(colocated):
    _, engine = colocated
    out = engine.generate(PROMPTS, SamplingParams(n=3, max_new_tokens=6, temperature=1.0, seed=1))
    assert [c.prompt_index for c in out] == [0, 0, 0, 1, 1, 1]
    for c in out:
        assert c.prompt_ids and 1 <= len(c.completion_ids) <= 6 and c.finish_reason in ("stop", "length")
        assert c.logprobs is not None and len(c.logprobs) == len(c.completion_ids)
    again = engine.generate(PROMPTS, SamplingParams(n=3, max_new_tokens=6, temperature=1.0, seed=1))
    assert [c.completion_ids for c in again] == [c.completion_ids for c in out]  # seeded per request


@needs_gpu_vllm
def test_vllm_sync_weights_changes_outputs_and_sleep_wake_keeps_them(colocated):
    from transformers import AutoModelForCausalLM

    folder, engine = colocated
    greedy = SamplingParams(n=1, max_new_tokens=8, temperature=0.0)
    first = engine.generate(PROMPTS, greedy)
    policy = AutoModelForCausalLM.from_pretrained(folder).cuda()
    torch.manual_seed(0)
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    engine.sleep()  # training phase: KV cache freed
    engine.sync_weights(policy)
    changed = engine.generate(PROMPTS, greedy)  # wakes the KV cache itself
    assert [c.completion_ids for c in changed] != [c.completion_ids for c in first]
    engine.sleep()
    engine.wake_up()
    assert [c.completion_ids for c in engine.generate(PROMPTS, greedy)] == [c.completion_ids for c in changed]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
@pytest.mark.parametrize(("command", "field"), [("grpo", "rollout.engine"), ("eval", "eval.engine"),
                                                ("sample", "engine")])
def test_every_sampling_command_with_the_vllm_engine_and_no_vllm_is_a_one_line_error(tiny_random_model, tmp_path,
                                                                                      command, field):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "thinkrl.cli", command, "--set", f"{field}=vllm",
                           "--set", f"model.name={tiny_random_model}", "--set", f"run.output_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "pip install 'thinkrl[vllm]'" in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr


def test_server_sync_goes_in_bounded_buckets_and_skips_what_cannot_change(rollout_server, tiny_random_model,
                                                                          monkeypatch):
    """A LoRA policy: the first sync sends everything, later ones only the weights the merge
    rewrites (the adapted modules), each request at most one bucket (a bigger tensor alone)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from thinkrl.rollout.vllm_engine import ServerClient

    url, backend = rollout_server
    bucket_mb = 0.01  # 10 KiB: the tiny model's embedding goes alone, small tensors share a request
    engine = VLLMEngine("unused", VLLMConfig(mode="server", server_url=url, server_timeout_s=30,
                                             sync_bucket_mb=bucket_mb))
    bodies = []
    request = ServerClient.request

    def counting(self, method, route, data=None, content_type=None):
        if route == "/update_weights":
            bodies.append(len(data))
        return request(self, method, route, data, content_type)

    monkeypatch.setattr(ServerClient, "request", counting)
    base = AutoModelForCausalLM.from_pretrained(tiny_random_model)
    policy = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    first = engine.sync_weights(policy)
    assert len(bodies) > 3
    largest = max(t.numel() * t.element_size() for t in AutoModelForCausalLM.from_pretrained(
        tiny_random_model).state_dict().values())
    assert max(bodies) < max(bucket_mb * 2**20, largest) + 4096  # the safetensors header is small
    bodies.clear()
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.add_(0.5)
    second = engine.sync_weights(policy)
    assert 0 < second < first / 4, (second, first)
    with _merged(policy):
        want = {k.replace("base_model.model.", "").replace(".base_layer", ""): v.clone()
                for k, v in policy.state_dict().items() if ".lora_" not in k}
    served = backend.model.state_dict()
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.v_proj.weight",
                 "model.layers.0.mlp.up_proj.weight"):
        torch.testing.assert_close(served[name], want[name])


class _merged:
    """The policy with its adapter merged in, for the duration."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.model.merge_adapter()

    def __exit__(self, *exc):
        self.model.unmerge_adapter()
