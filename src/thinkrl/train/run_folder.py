"""A run folder holds one run: a new run never silently replaces another, and a resumed one
continues the config it was started with.

Rerunning a command without `--resume` used to truncate metrics.jsonl and leave the old
checkpoints beside the new ones; resuming with an edited config mixed two runs in one
curve. Both are refused here, with what to type instead.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from thinkrl.config import to_yaml
from thinkrl.errors import ConfigError

log = logging.getLogger(__name__)

# Fields a resumed run may change without changing what it trains: where the folder now is,
# the length of the run, how it is logged and kept, and the switches of this check itself.
RESUME_MAY_CHANGE = ("resume", "run.output_dir", "run.steps", "run.overwrite", "run.accept_config_change", "run.trackers", "run.plot",
                     "run.save_every", "run.sample_every", "run.keep_checkpoints", "run.torch_threads")
_RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoints", "final")


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted field, old value, new value) for every leaf that differs; nested sections are walked."""
    changes = []
    for key in sorted(set(old) | set(new)):
        path, a, b = f"{prefix}{key}", old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changes += config_diff(a, b, f"{path}.")
        elif a != b:
            changes.append((path, a, b))
    return changes


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` already holds a run: its config, its metrics or a checkpoint."""
    return any((run_dir / name).exists() for name in _RUN_FILES)


def prepare_run_folder(cfg: Any, run_dir: Path, command: str) -> None:
    """Check `run_dir` against `cfg` (refusing what would lose or mix runs), then write the
    run's config.yaml. Called once, on the main process."""
    saved = run_dir / "config.yaml"
    if holds_run(run_dir):
        if cfg.resume:
            _check_resume(cfg, saved, command)
        elif cfg.run.overwrite:
            log.warning("run.overwrite=true: replacing the run in %s (its checkpoints, metrics and plots)", run_dir)
            shutil.rmtree(run_dir)
        else:
            raise ConfigError(f"{run_dir} already holds a run; continue it with `thinkrl {command} {saved} --resume`, "
                              f"or replace it with --set run.overwrite=true, or pick another run.output_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(to_yaml(cfg))


def _check_resume(cfg: Any, saved: Path, command: str) -> None:
    if not saved.is_file():
        return
    old = yaml.safe_load(saved.read_text()) or {}
    new = yaml.safe_load(to_yaml(cfg)) or {}
    changes = [c for c in config_diff(old, new) if not c[0].startswith(RESUME_MAY_CHANGE)]
    if not changes:
        return
    lines = "\n".join(f"  {path}: {a!r} -> {b!r}" for path, a, b in changes)
    if cfg.run.accept_config_change:
        log.warning("resuming %s with a changed config (run.accept_config_change=true):\n%s", saved.parent, lines)
        return
    raise ConfigError(f"--resume: the config differs from the run's {saved}:\n{lines}\n"
                      f"resume with the saved config (`thinkrl {command} {saved} --resume`), or accept the change "
                      f"with --set run.accept_config_change=true")
