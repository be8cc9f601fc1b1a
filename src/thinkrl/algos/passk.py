"""pass@k and cons@k: how evaluation turns k graded samples per question into one number.

pass@1 here is the R1 paper's: sample k answers at temperature > 0 and average their
correctness, which has far less variance than grading one greedy answer. cons@k is majority
voting (self-consistency): the most frequent final answer of the k samples is graded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k samples is correct) from n samples of which
    c are correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every draw of k holds a correct one
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def mean_pass_at_k(correct: Sequence[Sequence[bool]], k: int) -> float:
    """pass@k over questions: the unbiased estimate per question, averaged."""
    _require_questions(correct)
    return sum(pass_at_k(len(row), sum(map(bool, row)), k) for row in correct) / len(correct)


def pass_at_1(correct: Sequence[Sequence[bool]]) -> float:
    """Mean correctness over each question's samples, then over questions (R1 paper's pass@1)."""
    _require_questions(correct)
    return sum(sum(map(bool, row)) / len(row) for row in correct) / len(correct)


def majority_answer(answers: Sequence[str | None]) -> str | None:
    """The most frequent non-empty answer; a tie goes to the one seen first. None when no
    sample produced an answer (no answer is never the majority while some answer exists)."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def cons_at_k(answers: Sequence[Sequence[str | None]],
              correct_lookup: Callable[[int, str], bool] | Sequence[dict[Hashable, bool]]) -> float:
    """Majority-vote accuracy: per question, is the most frequent extracted answer correct?

    `correct_lookup` tells whether answer `a` to question `i` is right: either a function
    `(i, a) -> bool` or, per question, a dict from answer to correctness (the grades the
    samples already got, so voting costs no second grading).
    """
    _require_questions(answers)
    hits = 0
    for i, row in enumerate(answers):
        voted = majority_answer(row)
        if voted is None:
            continue
        hits += bool(correct_lookup(i, voted) if callable(correct_lookup) else correct_lookup[i][voted])
    return hits / len(answers)


def _require_questions(rows: Sequence[Sequence[object]]) -> None:
    if not rows:
        raise ValueError("no questions to score")
    if any(len(row) == 0 for row in rows):
        raise ValueError("every question needs at least one sample")
