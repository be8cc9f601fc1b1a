"""The held-out split shared by every synthetic task.

Random problems drawn with two different seeds can coincide, so "a different seed" alone
would not keep evaluation problems out of training. Instead each problem's canonical text
is hashed into one of ten buckets: the held-out seed draws only from bucket 0, every other
seed only from buckets 1-9. Training on any seed therefore never sees a held-out problem.
"""

from __future__ import annotations

import zlib

HELDOUT_SEED = 1234
"""The seed of the evaluation / held-out split (training uses any other seed)."""

_BUCKETS = 10


def is_heldout_problem(key: str) -> bool:
    """Whether the problem with canonical text `key` belongs to the held-out split."""
    return zlib.crc32(key.encode()) % _BUCKETS == 0


def allowed_for_seed(key: str, seed: int) -> bool:
    """Whether generation with `seed` may emit the problem `key` (see the module docstring)."""
    return is_heldout_problem(key) == (seed == HELDOUT_SEED)
