"""The math of RL for reasoning, as pure functions of tensors: advantages, losses, KL, pass@k.
Estimators, losses, aggregations and rollout corrections are registered by name (algos/registry.py)."""

from thinkrl.algos.advantages import ADVANTAGES, group_advantages
from thinkrl.algos.aggregation import AGGREGATIONS
from thinkrl.algos.correction import CORRECTIONS
from thinkrl.algos.grpo import adapt_entropy_coef, entropy_from_logits, kl_k3, policy_loss, token_logprobs
from thinkrl.algos.losses import LOSSES

__all__ = ["ADVANTAGES", "AGGREGATIONS", "CORRECTIONS", "LOSSES", "adapt_entropy_coef", "entropy_from_logits",
           "group_advantages", "kl_k3", "policy_loss", "token_logprobs"]
