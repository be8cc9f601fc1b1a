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
