"""pass@k and cons@k against numbers worked out by hand."""

from __future__ import annotations

import pytest

from thinkrl.algos.passk import cons_at_k, majority_answer, mean_pass_at_k, pass_at_1, pass_at_k


def test_pass_at_k_hand_values():
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    # k=1 is the plain share of correct samples
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    # n=4, c=1, k=3: 1 - C(3,3)/C(4,3) = 1 - 1/4
    assert pass_at_k(4, 1, 3) == pytest.approx(0.75)
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(4, 2, 3) == 1.0  # only 2 wrong ones: any 3 include a correct one


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_pass_at_1_averages_per_question_first():
    # question A: 1 of 4 correct (0.25); question B: 2 of 2 (1.0) -> 0.625, not 3/6
    assert pass_at_1([[True, False, False, False], [True, True]]) == pytest.approx(0.625)
    assert pass_at_1([[False, False]]) == 0.0
    with pytest.raises(ValueError):
        pass_at_1([])
    with pytest.raises(ValueError):
        pass_at_1([[True], []])


def test_mean_pass_at_k():
    # A: n=4, c=1, k=2 -> 1 - C(3,2)/C(4,2) = 0.5 ; B: n=4, c=0 -> 0
    assert mean_pass_at_k([[True, False, False, False], [False] * 4], 2) == pytest.approx(0.25)


def test_majority_vote_ties_and_missing_answers():
    assert majority_answer(["3", "4", "4", None, None, None]) == "4"  # None never wins
    assert majority_answer(["7", "5", "5", "7"]) == "7"  # tie: the first seen
    assert majority_answer([None, None]) is None


def test_cons_at_k_with_dict_and_function_lookup():
    answers = [["3", "4", "4"], ["1", "2", "1"], [None, None, "9"], [None, None]]
    grades = [{"3": True, "4": False}, {"1": True, "2": False}, {"9": True}, {}]
    # votes: "4" wrong, "1" right, "9" right, nothing -> 2 of 4
    assert cons_at_k(answers, grades) == pytest.approx(0.5)
    reference = ["4", "2", "9", "0"]
    assert cons_at_k(answers, lambda i, a: a == reference[i]) == pytest.approx(0.5)
