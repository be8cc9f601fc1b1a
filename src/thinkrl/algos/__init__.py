"""The math of RL for reasoning, as pure functions of tensors: advantages, losses, KL, pass@k."""

from thinkrl.algos.grpo import (
    entropy_from_logits,
    group_advantages,
    kl_k3,
    policy_loss,
    token_logprobs,
)

__all__ = ["entropy_from_logits", "group_advantages", "kl_k3", "policy_loss", "token_logprobs"]
