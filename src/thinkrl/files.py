"""Where thinkrl keeps its own files (the cache), and writing a file so that a crash or kill
leaves the old file or the whole new one."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """thinkrl's cache (tiny builds, judge verdicts): $THINKRL_CACHE, else ~/.cache/thinkrl."""
    return Path(os.environ.get("THINKRL_CACHE", "~/.cache/thinkrl")).expanduser()


def atomic_write(path: Path, text: str) -> None:
    """Readers see the old file or the whole new one, never half of it (temp file, fsync, rename)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
