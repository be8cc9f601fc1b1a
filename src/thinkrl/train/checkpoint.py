"""Checkpoint and resume for the SFT and GRPO loops, safe against a kill at any moment.

A checkpoint is `run_dir/checkpoints/step-000040/` holding:
  the model in Hugging Face format (`save_pretrained`, safetensors; loads with
  AutoModelForCausalLM). For a peft model it is the adapter only (adapter_config.json +
  adapter_model.safetensors, which name their base model) and trainer_state.json says
  `"adapter": true`;
  the tokenizer; optimizer.pt; scheduler.pt; rng_state.pt (python, numpy, torch CPU and CUDA);
  trainer_state.json: the step, whatever the loop passes in `extra_state` (data position...).

Why not accelerate's `save_state`: it needs an Accelerator that prepared every object,
writes a bare state dict rather than a loadable HF folder, and is not atomic. Atomicity is
the point here: everything is written into a hidden temp folder next to the final one,
fsynced, then renamed in one `os.rename`; only then does the `latest` pointer move (write a
temp file + `os.replace`), and only then are old checkpoints pruned. A kill before the rename
leaves a temp folder that is ignored and swept later; a kill after it leaves the pointer on
the previous, complete checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

STATE_NAME = "trainer_state.json"  # written last: its presence marks a finished folder
POINTER_NAME = "latest"
OPTIMIZER_NAME = "optimizer.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_TMP_PREFIX = ".tmp-"


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model,
    tokenizer,
    optimizer: torch.optim.Optimizer | None,
    scheduler,
    extra_state: dict[str, Any] | None = None,
    keep_last: int = 2,
    model_state: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint for `step` atomically, point `latest` at it, keep the newest
    `keep_last`. Returns the checkpoint folder. `extra_state` must be JSON-serialisable.
    `model_state`/`optimizer_state`, when given, are written instead of the objects' own
    (FSDP: the whole states gathered from the shards)."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    extra_state = dict(extra_state or {})
    if "step" in extra_state:
        raise ValueError("extra_state may not hold 'step': save_checkpoint records it")
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = root / f"{_TMP_PREFIX}{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _write_contents(tmp, step, model, tokenizer, optimizer, scheduler, extra_state, model_state, optimizer_state)
        _fsync_tree(tmp)
        final = _publish(tmp, root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _point_latest(root, name)
    _prune(root, step, keep_last)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: the one `latest` names, else the newest finished
    `step-*` folder (temp folders of interrupted saves never count). None if there is none."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / POINTER_NAME
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        if _STEP_DIR.match(named.name) and _is_complete(named):
            return named
    finished = _finished_checkpoints(root)
    return finished[-1][1] if finished else None


def resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint `--resume` continues from; None (with a warning) starts from step 0."""
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        log.warning("--resume: no checkpoint in %s, starting from step 0", run_dir)
    return checkpoint


def load_checkpoint(path: str | Path, model, optimizer: torch.optim.Optimizer | None = None,
                    scheduler=None) -> dict[str, Any]:
    """Restore weights into the existing `model` (in place, so optimiser references stay
    valid), the optimiser, the scheduler and the RNG streams. Returns trainer_state.json."""
    path = Path(path)
    if not _is_complete(path):
        raise FileNotFoundError(f"{path} is not a finished thinkrl checkpoint (no {STATE_NAME})")
    state = json.loads((path / STATE_NAME).read_text())
    if state.get("adapter"):
        _load_adapter(path, model)
    else:
        _load_full_weights(path, model)
    if optimizer is not None:
        optimizer.load_state_dict(load_optimizer_state(path))
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True))
    _set_rng_state(torch.load(path / "rng_state.pt", map_location="cpu", weights_only=True))
    return state


def load_optimizer_state(path: str | Path) -> dict[str, Any]:
    """The checkpoint's optimizer state, whole (as `Optimizer.state_dict()` gives it)."""
    return torch.load(Path(path) / OPTIMIZER_NAME, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- writing


def _write_contents(folder: Path, step: int, model, tokenizer, optimizer, scheduler, extra_state: dict,
                    model_state: dict | None, optimizer_state: dict | None) -> None:
    adapter = _is_peft(model)
    model.save_pretrained(folder, safe_serialization=True, state_dict=model_state)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    if optimizer_state is None and optimizer is not None:
        optimizer_state = optimizer.state_dict()
    if optimizer_state is not None:
        torch.save(optimizer_state, folder / OPTIMIZER_NAME)
    if scheduler is not None:
        torch.save(scheduler.state_dict(), folder / "scheduler.pt")
    torch.save(_rng_state(), folder / "rng_state.pt")
    state = {"step": step, "adapter": adapter, **extra_state}
    (folder / STATE_NAME).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


def _fsync_tree(folder: Path) -> None:
    """Flush every file and directory entry to disk, so the rename never publishes a folder
    whose contents are still only in the page cache."""
    for dirpath, _, filenames in os.walk(folder):
        for filename in filenames:
            fd = os.open(os.path.join(dirpath, filename), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, final: Path) -> Path:
    """Rename the finished temp folder into place. A folder already there for this step is
    left over from a run that was resumed from an earlier checkpoint: it is replaced."""
    if final.exists():
        stale = final.with_name(f"{_TMP_PREFIX}replaced-{final.name}-{os.getpid()}")
        os.rename(final, stale)
        os.rename(tmp, final)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_dir(final.parent)
    return final


def _point_latest(root: Path, name: str) -> None:
    tmp = root / f"{_TMP_PREFIX}{POINTER_NAME}-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / POINTER_NAME)
    _fsync_dir(root)


def _prune(root: Path, step: int, keep_last: int) -> None:
    """Keep the newest `keep_last` checkpoints up to `step`. Later steps belong to a
    timeline that was abandoned by resuming from an earlier checkpoint, and go; so do the
    temp folders that killed saves left behind (this process is the only writer)."""
    finished = _finished_checkpoints(root)
    kept = [path for s, path in finished if s <= step][-keep_last:]
    for _, path in finished:
        if path not in kept:
            shutil.rmtree(path, ignore_errors=True)
    for leftover in root.glob(f"{_TMP_PREFIX}*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _finished_checkpoints(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and _is_complete(child):
            found.append((int(match.group(1)), child))
    return sorted(found)


def _is_complete(path: Path) -> bool:
    return (path / STATE_NAME).is_file()


# ---------------------------------------------------------------- weights


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def _load_full_weights(path: Path, model) -> None:
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    expected = set(model.state_dict())
    loaded: set[str] = set()
    for filename in files:
        shard = load_file(path / filename)
        unexpected = set(shard) - expected
        if unexpected:
            raise ValueError(f"{path} holds weights this model does not have, e.g. {sorted(unexpected)[:3]}: "
                             "was it saved from a different architecture?")
        model.load_state_dict(shard, strict=False)
        loaded.update(shard)
        del shard
    # save_pretrained stores tied weights once (lm_head shares the embedding), so those
    # are restored through their source; anything else missing is a real mismatch.
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    missing = expected - loaded - tied
    if missing:
        raise ValueError(f"{path} lacks weights for {sorted(missing)[:3]}: not a checkpoint of this model")


def _load_adapter(path: Path, model) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    if not _is_peft(model):
        raise ValueError(f"{path} holds a LoRA adapter, but the model to restore is not a peft model")
    result = set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"{path} holds adapter weights this model does not have, e.g. {sorted(unexpected)[:3]}")


# ---------------------------------------------------------------- random streams


def _rng_state() -> dict[str, Any]:
    """Every stream a loop may draw from, in a form `torch.load(weights_only=True)` accepts."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np
    except ImportError:
        pass
    else:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {"kind": kind, "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                          "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        saved = state["numpy"]
        np.random.set_state((saved["kind"], saved["keys"].numpy().astype("uint32"), saved["pos"],
                             saved["has_gauss"], saved["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    """random.setstate wants tuples all the way down; serialisation may hand back lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value
