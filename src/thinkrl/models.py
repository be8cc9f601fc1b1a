"""Loading models and tokenizers by local path or hub id, offline-safe.

A name that is neither a folder nor in the local Hugging Face cache becomes one clear
error saying what is missing and how to provide it, never a network stack trace.
`thinkrl/tiny` names the embedded default, built locally on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thinkrl.errors import ModelNotFoundError

TINY_NAME = "thinkrl/tiny"


def is_tiny(name: str) -> bool:
    """`thinkrl/tiny` or `thinkrl/tiny@SEED`: the embedded default, built here, never fetched."""
    return name == TINY_NAME or name.startswith(TINY_NAME + "@")


def resolve_model_path(name_or_path: str) -> str:
    """A local folder for `name_or_path`, building the tiny default if that is what is named."""
    if is_tiny(name_or_path):
        from thinkrl.tiny.build import ensure_tiny

        seed = int(name_or_path.split("@", 1)[1]) if "@" in name_or_path else 0
        return str(ensure_tiny(seed=seed))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file() and not (path / "tokenizer_config.json").is_file():
            raise ModelNotFoundError(f"{path} exists but holds no Hugging Face checkpoint (no config.json)")
        return str(path)
    if name_or_path.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model folder not found: {name_or_path}")
    return _from_hub_cache(name_or_path)


def _from_hub_cache(repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:
        pass
    try:
        return snapshot_download(repo_id)
    except Exception as exc:  # offline, unknown repo, gated: all the same to the user
        raise ModelNotFoundError(
            f"model '{repo_id}' is not a local folder and could not be fetched from the hub "
            f"({type(exc).__name__}). Download it where you have network "
            f"(`huggingface-cli download {repo_id} --local-dir DIR`) and pass DIR instead."
        ) from None


def load_tokenizer(name_or_path: str) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str, dtype: str = "float32", device: str = "cpu") -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name_or_path), dtype=getattr(torch, dtype))
    return model.to(device)
