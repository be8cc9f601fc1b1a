"""Named algorithm recipes: the `algo` settings that make each published GRPO-family method,
for `thinkrl demo --set algo=NAME` and as a starting point for a YAML `algo:` section.

Each preset is a plain dict of `AlgoConfig` fields over the defaults (GRPO: group-std
advantages, PPO-clip at 0.2, the sequence mean). With one optimiser step per rollout batch
every loss sees a ratio of exactly 1, and PPO-clip, dual-clip, GSPO and CISPO then give the
same gradient; they differ once the batch feeds several steps (`optim.updates_per_pass`,
`algo.mu`), as in the papers.
"""

from __future__ import annotations

import difflib
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "grpo": {},  # DeepSeekMath / R1
    "dr_grpo": {"scale": "none", "aggregation": "dr_grpo"},  # Liu et al. 2025: no std, no length bias
    "dapo": {"eps_low": 0.2, "eps_high": 0.28, "aggregation": "token", "dynamic_sampling": True},  # Yu et al. 2025
    "rloo": {"advantage": "rloo"},  # Ahmadian et al. 2024
    "reinforce_pp": {"advantage": "reinforce_pp", "aggregation": "token"},  # Hu 2025
    "reinforce_pp_baseline": {"advantage": "reinforce_pp_baseline", "aggregation": "token"},
    "pass_at_k": {"advantage": "pass_at_k"},  # optimises pass@4 of the group, not pass@1
    "dual_clip": {"loss": "dual_clip"},  # Ye et al. 2020
    "gspo": {"loss": "gspo"},  # Zheng et al. 2025 (Qwen3): sequence-level ratio
    "cispo": {"loss": "cispo", "aggregation": "token"},  # MiniMax-M1
    "forking_tokens": {"top_entropy": 0.2, "aggregation": "token"},  # Wang et al. 2025, the 80/20 rule
}


def preset(name: str) -> dict[str, Any]:
    """The preset's `algo` fields; a ValueError with the close names for an unknown one."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown algorithm preset {name!r}{hint} (presets: {', '.join(PRESETS)})")
    return dict(PRESETS[name])
