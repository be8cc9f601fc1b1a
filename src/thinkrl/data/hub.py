"""Hugging Face hub datasets, for when `data.path` is an id rather than a local path.

thinkrl usually runs without network. Asking `datasets` for a hub id there can retry for
minutes, so the hub is probed first with a short timeout and, when it cannot be reached,
the user gets one line saying how to provide the data instead.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.error
import urllib.request
from typing import Any

from thinkrl.errors import ConfigError, DataError

PROBE_TIMEOUT_S = 3.0
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def looks_like_hub_id(path: str) -> bool:
    """`owner/name` or `name`, not something that reads as a file path."""
    return bool(_HUB_ID.fullmatch(path)) and not path.lower().endswith((".jsonl", ".json", ".parquet"))


def _offline_by_env() -> bool:
    flags = (os.environ.get(k, "").lower() for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(flag in ("1", "true", "yes", "on") for flag in flags)


def hub_reachable(timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the hub endpoint answers within `timeout_s` (any HTTP status counts as an answer).

    Runs in a daemon thread so a slow DNS lookup cannot hold the caller past the timeout.
    """
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    answered: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(endpoint, timeout=timeout_s).close()
            answered.append(True)
        except urllib.error.HTTPError:
            answered.append(True)
        except Exception:  # noqa: BLE001 - any network failure means "not reachable"
            answered.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    return bool(answered and answered[0])


def _how_to_provide(dataset_id: str) -> str:
    return (f"data.path '{dataset_id}' is not a local file or folder and the Hugging Face hub could not be "
            f"reached to fetch it; download it where there is network (datasets.load_dataset(...).save_to_disk(DIR) "
            f"or its jsonl/parquet files) and pass data.path=DIR or the file")


def load_hub_rows(dataset_id: str, subset: str | None, split: str) -> Any:
    """The `split` of hub dataset `dataset_id` as a `datasets.Dataset` (from the local cache when offline)."""
    offline = _offline_by_env()
    if not offline and not hub_reachable():
        raise DataError(_how_to_provide(dataset_id))
    import datasets

    try:
        return datasets.load_dataset(dataset_id, subset, split=split)
    except Exception as err:  # noqa: BLE001 - the library's many failure types all mean "cannot load"
        lines = str(err).strip().splitlines()
        reason = lines[0] if lines else type(err).__name__
        if "Unknown split" in reason:  # datasets: 'Unknown split "x". Should be one of [...]'
            raise ConfigError(f"hub dataset '{dataset_id}' has no split '{split}' ({reason}); set data.split") from None
        if offline:
            raise DataError(f"{_how_to_provide(dataset_id)} (offline: {reason})") from None
        where = f"hub dataset '{dataset_id}' (subset {subset}, split {split})"
        raise DataError(f"{where} could not be loaded: {reason}") from None
