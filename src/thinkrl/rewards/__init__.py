"""Rule-based rewards (the only teacher in R1-Zero): a registry of reward functions by name,
each returning a score and the reason for it, and a batch scorer that runs them safely.

Importing this package registers every built-in reward; it never imports torch.
"""

from thinkrl.rewards import accuracy, formats, language, length, math_grading  # noqa: F401, I001  (registers)
from thinkrl.rewards import judge, reward_model  # noqa: F401  (registers)
from thinkrl.rewards.base import RewardFn, RewardResult, get_reward, register, reward_names
from thinkrl.rewards.extract import extract_answer, extract_code
from thinkrl.rewards.scoring import RewardScores, score_completions
from thinkrl.rewards.spec import RewardTerm, r1_zero_spec

__all__ = ["RewardFn", "RewardResult", "RewardScores", "RewardTerm", "extract_answer", "extract_code", "get_reward",
           "r1_zero_spec", "register", "reward_names", "score_completions"]
