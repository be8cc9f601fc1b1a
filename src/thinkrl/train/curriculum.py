"""An online pass-rate curriculum: prompts the policy always solves, or never solves, give a
group whose rewards all agree, so an advantage of 0 and no gradient; sampling them less
spends the step's generation on prompts that teach something.

Every prompt's pass rate (the group mean of one reward term, `algo.curriculum_reward`) is
kept from the last time it was sampled, and saved in every checkpoint. A prompt last seen
at pass rate 0 or 1 is drawn with weight `algo.curriculum_weight`, every other prompt
(unseen ones included) with weight 1, without replacement. The draw for step s is seeded by
(seed, step, round), so a resumed run with the restored rates draws the same prompts.
"""

from __future__ import annotations

import torch

EXTREME_TOLERANCE = 1e-9


class PassRates:
    """The last pass rate seen for each prompt index, and the draw it weights."""

    def __init__(self, size: int, weight: float, seed: int) -> None:
        if size < 1:
            raise ValueError("a curriculum needs at least one prompt")
        self.size, self.weight, self.seed = size, weight, seed
        self.rates: dict[int, float] = {}

    def observe(self, observations: list[tuple[int, float]]) -> None:
        """(prompt index, its group's pass rate) for every group sampled this step."""
        for index, rate in observations:
            self.rates[int(index)] = float(rate)

    def extreme(self, index: int) -> bool:
        rate = self.rates.get(index)
        return rate is not None and (rate <= EXTREME_TOLERANCE or rate >= 1 - EXTREME_TOLERANCE)

    def weights(self) -> torch.Tensor:
        w = torch.ones(self.size, dtype=torch.float64)
        for index in self.rates:
            if self.extreme(index):
                w[index] = self.weight
        return w

    def draw(self, count: int, step: int, round_: int = 0) -> list[int]:
        """`count` distinct prompts (with repeats only when the set is smaller than `count`)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 131 + round_)
        w = self.weights()
        live = int((w > 0).sum())
        if live < min(count, self.size):  # weight 0 left too few: the rest come uniformly from the others
            w = torch.where(w > 0, w, torch.full_like(w, 1e-12))
        out: list[int] = []
        while len(out) < count:
            take = min(count - len(out), self.size)
            out += torch.multinomial(w, take, replacement=False, generator=generator).tolist()
        return out

    def metrics(self, drawn: list[int]) -> dict[str, float]:
        """How much of the set is known, solved, unsolved, and how often the draw still took an extreme."""
        solved = sum(r >= 1 - EXTREME_TOLERANCE for r in self.rates.values())
        unsolved = sum(r <= EXTREME_TOLERANCE for r in self.rates.values())
        return {
            "curriculum/seen_share": len(self.rates) / self.size,
            "curriculum/solved_share": solved / self.size,
            "curriculum/unsolved_share": unsolved / self.size,
            "curriculum/drawn_extreme_share": sum(self.extreme(i) for i in drawn) / max(len(drawn), 1),
        }

    def state(self) -> dict[str, float]:
        """JSON-ready: prompt index (as text) -> pass rate."""
        return {str(i): r for i, r in sorted(self.rates.items())}

    def load(self, state: dict[str, float] | None) -> None:
        self.rates = {int(i): float(r) for i, r in (state or {}).items() if 0 <= int(i) < self.size}


def group_pass_rates(indices: list[int], by_name: dict[str, list[float]], reasons: dict[str, list[str]],
                     name: str, group_size: int, not_applicable: str) -> list[tuple[int, float]]:
    """(prompt index, mean score of reward `name` over its group) for each group the reward
    applies to; groups it does not grade (another kind's reward) are left out."""
    scores, why = by_name.get(name), reasons.get(name)
    if scores is None:
        return []
    out = []
    for g, index in enumerate(indices):
        span = range(g * group_size, (g + 1) * group_size)
        applied = [scores[i] for i in span if why[i] != not_applicable]
        if applied:
            out.append((index, sum(applied) / len(applied)))
    return out
