"""Shared fixtures: the real benchmark files and tokenizers in ../shared, tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("THINKRL_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.fail(f"../shared not found at {SHARED}; set THINKRL_SHARED to the folder holding data/ and tokenizers/")
    return SHARED


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    return shared_dir / "data"


@pytest.fixture(scope="session")
def qwen_tokenizer_dir(shared_dir: Path) -> Path:
    return shared_dir / "tokenizers" / "qwen2.5-vocab"


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The CI machine has 2 shared cores; one thread per test process keeps timings sane."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def build_tiny_random_model(folder: Path, arch: str = "llama", positions: int = 256) -> Path:
    """A random 2-layer model (Llama or Qwen2 architecture) with the tiny char tokenizer,
    saved as an ordinary Hugging Face checkpoint in `folder`."""
    import torch
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    from thinkrl.tiny.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    config = config_cls(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=positions,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    model_cls(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_random_model(tmp_path_factory) -> Path:
    """A random tiny Llama checkpoint folder (char tokenizer), made once per test session."""
    return build_tiny_random_model(tmp_path_factory.mktemp("tiny-random"))
