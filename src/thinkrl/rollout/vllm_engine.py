"""The vLLM rollout engine: fast sampling on GPUs, behind the same protocol as transformers.

Two modes. `colocate`: vLLM lives in the training process, on the training GPU, taking
`gpu_memory_utilization` of it; between rollouts it sleeps (KV cache freed, weights
offloaded) so the optimizer step has the memory. `server`: vLLM runs on other GPUs or
another node (`thinkrl vllm-serve`, see rollout/vllm_server.py) and this engine is its
HTTP client. Either way the trainer calls `sync_weights(policy)` after every optimiser
step, so the next rollout samples from the policy being trained.

The engine's log-probs are returned for inspection only and are NOT used in the GRPO
ratio: vLLM's kernels, sampling and precision differ from the training forward pass
(train/inference mismatch), so the trainer recomputes old and new log-probs itself.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import time
import urllib.error
import urllib.request
from typing import Any, Literal

from pydantic import Field

from thinkrl.config import Config
from thinkrl.errors import ThinkrlError
from thinkrl.processes import is_main_launched_process, launched_processes
from thinkrl.rollout.base import Completion, SamplingParams, derived_seed
from thinkrl.rollout.weights import buckets, changing_weight_names, merged_weights, tensor_bytes

NEEDS_VLLM = "rollout.engine=vllm needs vLLM: pip install 'thinkrl[vllm]' (a CUDA machine)"
NEEDS_CUDA = "rollout.engine=vllm needs a CUDA GPU and none is visible; use rollout.engine=transformers on this machine"


class VLLMConfig(Config):
    """Settings of the vLLM engine (`rollout.vllm` in a GRPO config)."""

    mode: Literal["colocate", "server"] = Field(
        "colocate", description="colocate: vLLM inside the training process, sharing its GPU; "
        "server: a `thinkrl vllm-serve` process on other GPUs, reached at server_url")
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="share of each GPU's memory vLLM takes "
                                          "(weights + KV cache); the rest is the trainer's")
    enable_sleep_mode: bool = Field(True, description="free vLLM's KV cache (and offload its weights) while the "
                                    "trainer runs forward/backward; woken for the next rollout")
    sleep_level: Literal[1, 2] = Field(1, description="1: weights kept in CPU memory while asleep; 2: weights "
                                       "dropped (they are overwritten by sync_weights before the next rollout anyway)")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one vLLM engine spans (tensor parallel)")
    max_model_len: int | None = Field(None, ge=1, description="longest prompt + completion vLLM plans for "
                                      "(None: the model's own limit); smaller leaves more room for KV cache")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field("bfloat16", description="vLLM weights dtype")
    enforce_eager: bool = Field(False, description="skip CUDA graph capture (starts faster, samples slower)")
    enable_prefix_caching: bool = Field(True, description="reuse the KV of shared prompt prefixes (a group's "
                                        "G samples share their prompt); reset after every weight sync")
    server_url: str = Field("http://127.0.0.1:8000", description="server mode: base URL of `thinkrl vllm-serve`")
    server_timeout_s: float = Field(600.0, gt=0, description="server mode: how long to wait for the server to "
                                    "come up and for one request to finish")
    sync_bucket_mb: float = Field(256.0, gt=0, description="server mode: weights travel in requests of at most this "
                                  "many MiB (a larger tensor goes alone), so no side holds a second whole copy")


def require_vllm() -> Any:
    """The vllm module, or one clear line saying how to get it."""
    try:
        import vllm
    except ImportError:
        raise ThinkrlError(NEEDS_VLLM) from None
    return vllm


def require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise ThinkrlError(NEEDS_CUDA)


# ------------------------------------------------------------------- weights, as vLLM names them

# ------------------------------------------------------------------- sampling, both ways

def vllm_sampling_params(vllm: Any, params: SamplingParams, seed: int | None) -> Any:
    """thinkrl's SamplingParams as vLLM's. Every knob that changes the distribution is set,
    so a checkpoint's generation_config.json (top_k=20, repetition_penalty...) cannot leak in."""
    return vllm.SamplingParams(
        n=params.n, max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
        top_k=-1, min_p=0.0, repetition_penalty=1.0, seed=seed, stop=list(params.stop) or None,
        include_stop_str_in_output=True,  # keep `</answer>` visible to the format reward
        skip_special_tokens=False,  # <think> may be a special token; the format reward must see it
        logprobs=0,  # the sampled token's log-prob (processed_logprobs: after temperature and top-p)
    )


def completions_from_outputs(outputs: list[Any]) -> list[Completion]:
    """vLLM RequestOutputs (one per prompt, `n` samples each) as Completions grouped by prompt."""
    out = []
    for index, request in enumerate(outputs):
        for sample in request.outputs:
            logprobs = None
            if sample.logprobs:
                logprobs = [step[token].logprob for step, token in zip(sample.logprobs, sample.token_ids)]
            out.append(Completion(prompt_index=index, text=sample.text, prompt_ids=list(request.prompt_token_ids),
                                  completion_ids=list(sample.token_ids), logprobs=logprobs,
                                  finish_reason="length" if sample.finish_reason == "length" else "stop"))
    return out


# ------------------------------------------------------------------- the engine

class VLLMEngine:
    """A RolloutEngine on vLLM: `generate`, plus `sync_weights`, `sleep` and `wake_up` for the
    trainer. In colocate mode it needs vllm and a CUDA GPU here; in server mode only the
    server does.

    Prompts are tokenised here (no special tokens added, as the transformers engine does), so
    the trainer receives exactly the prompt ids vLLM conditioned on.
    """

    def __init__(self, model: str, config: VLLMConfig | None = None, tokenizer: str | None = None,
                 seed: int = 0) -> None:
        self.config = config or VLLMConfig()
        self.seed = seed
        self._asleep: set[str] = set()
        self._weights_stale = False
        self._synced_once = False  # after the first sync, only tensors that can change are sent
        self.weights_dtype = self.config.dtype  # what vLLM holds, so what sync_weights sends
        if self.config.mode == "server":
            self.client = ServerClient(self.config.server_url, self.config.server_timeout_s)
            self.weights_dtype = self.client.wait_ready().get("dtype", "auto")  # the server's, not ours
            self.llm = None
            return
        vllm = require_vllm()
        require_cuda()
        from thinkrl.rollout.transformers_engine import default_bos
        self.vllm = vllm
        self.llm = vllm.LLM(**self._llm_kwargs(model, tokenizer))
        self.tokenizer = self.llm.get_tokenizer()
        self._bos = default_bos(self.tokenizer)

    def _llm_kwargs(self, model: str, tokenizer: str | None) -> dict[str, Any]:
        cfg = self.config
        # The engine core in this process: weights are loaded by a direct call, not pickled
        # across a process boundary (and the trainer's CUDA context is shared).
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        kwargs: dict[str, Any] = {
            "model": model, "tokenizer": tokenizer or model, "dtype": cfg.dtype, "seed": self.seed,
            "gpu_memory_utilization": cfg.gpu_memory_utilization, "tensor_parallel_size": cfg.tensor_parallel_size,
            "max_model_len": cfg.max_model_len, "enforce_eager": cfg.enforce_eager,
            "enable_sleep_mode": cfg.enable_sleep_mode, "enable_prefix_caching": cfg.enable_prefix_caching,
            # log-probs of the distribution actually sampled (after temperature and top-p), which
            # the mismatch correction needs; vLLM's default is the raw model's
            "logprobs_mode": "processed_logprobs",
        }
        if launched_processes() > 1:
            # Under `accelerate launch` each training process hosts its own engine on its GPU,
            # inside the process group accelerate made.
            if cfg.tensor_parallel_size > 1:
                # external_launcher is SPMD: the ranks of a tensor-parallel group would have to pass
                # the same prompts, and each training process samples its own share.
                raise ThinkrlError(f"rollout.vllm.tensor_parallel_size={cfg.tensor_parallel_size} under a multi-process "
                                   "launch is not supported: use 1 (an engine per GPU) or server mode "
                                   "(rollout.vllm.mode=server, a tensor-parallel vllm-serve)")
            kwargs["distributed_executor_backend"] = "external_launcher"
            kwargs["seed"] = self.seed + int(os.environ.get("RANK", "0"))
        return kwargs

    # -- RolloutEngine
    def generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        """len(prompts) * params.n completions, grouped by prompt in order."""
        if params.n < 1 or params.max_new_tokens < 1 or params.temperature < 0:
            raise ValueError(f"need n >= 1, max_new_tokens >= 1 and temperature >= 0, got {params}")
        if self.llm is None:
            return self.client.generate(prompts, params)
        self.wake_up()
        if self._weights_stale:
            raise RuntimeError("vLLM slept at level 2 (weights dropped) and no sync_weights came before generate")
        requests = [{"prompt_token_ids": self.encode_prompt(p)} for p in prompts]
        # One seed per request, hashed: vLLM seeds sample j of a request with seed + j, so seeds
        # seed + i would give prompt 0's second sample prompt 1's first stream.
        sampling = [vllm_sampling_params(self.vllm, params, None if params.seed is None else derived_seed(params.seed, i))
                    for i in range(len(prompts))]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        return completions_from_outputs(outputs)

    def encode_prompt(self, prompt: str) -> list[int]:
        """As the transformers engine does: no special tokens, except the bos that bos-using
        tokenizers (Llama) put in front of text; Qwen has none."""
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if self._bos is not None and (not ids or ids[0] != self._bos):
            ids = [self._bos] + ids
        return ids

    # -- trainer hooks
    def sync_weights(self, model: Any) -> int:
        """Push the policy's current weights into vLLM (after every optimiser step). `model` is
        the unwrapped policy; a peft model is merged for the copy. Returns the bytes sent.
        After the first sync only tensors that training can change are sent (a LoRA run's
        frozen base outside the adapted modules, persistent buffers: never again), unless a
        level-2 sleep dropped the weights. Every training process calls it: colocated, each
        syncs its own engine; in server mode all take part in gathering FSDP shards, and the
        main process alone uploads (one server, one copy), in bounded requests."""
        import torch

        dtype = None if self.weights_dtype == "auto" else getattr(torch, self.weights_dtype)
        only = changing_weight_names(model) if self._synced_once and not self._weights_stale else None
        with merged_weights(model, dtype, only=only) as items:
            if self.llm is None:
                sent = self.client.update_weights(items, dtype, self._bucket_bytes()) if is_main_launched_process() else 0
                self._synced_once = True
                return sent
            self.wake_up(("weights",))
            self.load_weight_items(items)
        self._weights_stale = False
        self._synced_once = True
        if self.config.enable_prefix_caching and hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()  # cached prefixes hold keys/values of the old weights
        return sum(tensor_bytes(t, dtype) for _, t in items)

    def _bucket_bytes(self) -> int:
        return int(self.config.sync_bucket_mb * 2**20)

    def load_weight_items(self, items: list[tuple[str, Any]]) -> int:
        """Load (name, tensor) pairs into the model inside vLLM (also the server's entry point)."""
        def load(module: Any) -> None:
            module.load_weights(weights=items)

        if hasattr(self.llm, "apply_model"):  # vLLM >= 0.9: runs `load` on the model in every worker
            self.llm.apply_model(load)
        else:  # older engines expose the model directly
            self.llm.llm_engine.model_executor.driver_worker.model_runner.model.load_weights(weights=items)
        return len(items)

    def sleep(self) -> None:
        """Free the KV cache (and offload or drop the weights) while the trainer needs the GPU."""
        if self.llm is None:
            if is_main_launched_process():  # one server: one request
                self.client.post("/sleep", {})
            return
        if not self.config.enable_sleep_mode or self._asleep:
            return
        self.llm.sleep(level=self.config.sleep_level)
        self._asleep = {"weights", "kv_cache"}
        self._weights_stale = self.config.sleep_level == 2

    def wake_up(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None:
        """Give vLLM its memory back; tags wake part of it (weights first, to load new ones
        before the KV cache is reallocated)."""
        if self.llm is None:
            self.client.post("/wake_up", {"tags": list(tags)})
            return
        wanted = self._asleep & set(tags)
        if not wanted:
            return
        if "tags" in inspect.signature(self.llm.wake_up).parameters:
            self.llm.wake_up(tags=sorted(wanted))
            self._asleep -= wanted
        else:  # vLLM without partial wake-up
            self.llm.wake_up()
            self._asleep = set()


# ------------------------------------------------------------------- server mode: the client

class ServerClient:
    """HTTP client of `thinkrl vllm-serve` (routes documented in rollout/vllm_server.py)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def wait_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return self.request("GET", "/health")
            except ThinkrlError:
                if time.monotonic() > deadline:
                    raise ThinkrlError(f"no vLLM server answered at {self.url} within {self.timeout_s:g} s; "
                                       f"start one with `thinkrl vllm-serve` or set rollout.vllm.server_url") from None
                time.sleep(1.0)

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        body = {"prompts": prompts, "params": {"n": params.n, "max_new_tokens": params.max_new_tokens,
                                               "temperature": params.temperature, "top_p": params.top_p,
                                               "seed": params.seed, "stop": list(params.stop)}}
        return [Completion(**row) for row in self.post("/generate", body)["completions"]]

    def update_weights(self, items: list[tuple[str, Any]], dtype: Any = None, bucket_bytes: int = 256 * 2**20) -> int:
        """Ship the weights as safetensors bodies of at most `bucket_bytes` each (a larger
        tensor goes alone), in `dtype` (the server's) when given; only one bucket is ever
        copied to CPU at a time. Returns the bytes of tensor data sent."""
        from safetensors.torch import save

        sent = 0
        for bucket in buckets(items, bucket_bytes, dtype):
            tensors = {name: tensor.to("cpu", dtype).contiguous() for name, tensor in bucket}
            answer = self.request("POST", "/update_weights", save(tensors), "application/octet-stream")
            if int(answer["loaded"]) != len(tensors):
                raise ThinkrlError(f"the server loaded {answer['loaded']} of {len(tensors)} tensors")
            sent += sum(t.numel() * t.element_size() for t in tensors.values())
        return sent

    def post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", route, json.dumps(body).encode(), "application/json")

    def request(self, method: str, route: str, data: bytes | None = None,
                content_type: str | None = None) -> dict[str, Any]:
        req = urllib.request.Request(self.url + route, data=data, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.load(io.TextIOWrapper(resp, encoding="utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace").strip()
            raise ThinkrlError(f"vLLM server {self.url}{route} answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ThinkrlError(f"vLLM server {self.url}{route} unreachable: {exc}") from None
