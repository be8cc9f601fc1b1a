"""The chain task: deterministic generation, exact checking, correct scratchpads."""

from __future__ import annotations

import re

import pytest

from thinkrl.data.tasks import HELDOUT_SEED, get_task

chain = get_task("chain")


def test_same_seed_same_problems_and_ids():
    a, b = chain.generate(50, seed=3), chain.generate(50, seed=3)
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]
    assert a[7].id == "chain-3-7" and a[7].kind == "chain"
    assert [e.prompt for e in chain.generate(50, seed=4)] != [e.prompt for e in a]


def test_prompts_are_distinct_within_a_seed():
    prompts = [e.prompt for e in chain.generate(500, seed=0)]
    assert len(set(prompts)) == 500


def test_answer_is_the_left_to_right_value_and_scratchpad_shows_each_step():
    for ex in chain.generate(200, seed=1):
        steps = chain.scratchpad(ex).split(" ")
        assert len(steps) == len(ex.meta["ops"])
        value = ex.meta["start"]
        for step, (op, operand) in zip(steps, ex.meta["ops"]):
            left, result = step.split("=")
            assert left == f"{value}{op}{operand}"
            value = {"+": value + operand, "-": value - operand, "*": value * operand}[op]
            assert int(result) == value and 0 <= value <= 99
        assert ex.answer == str(value)
        # The brackets make the prompt mean the same under ordinary precedence.
        assert eval(ex.prompt, {"__builtins__": {}}) == value  # trusted generator output, not model text


def test_known_problem_scratchpad():
    ex = next(e for e in chain.generate(300, seed=0) if e.prompt == "((24+6)-6)*2")
    assert chain.scratchpad(ex) == "24+6=30 30-6=24 24*2=48"
    assert ex.answer == "48"


def test_check_accepts_equivalent_integer_forms_and_rejects_the_rest():
    ex = chain.generate(1, seed=0)[0]
    right = int(ex.answer)
    for ok in (str(right), f" {right} ", f"{right}.", f"{right}.0", f"+{right}"):
        assert chain.check(ok, ex), ok
    for bad in (str(right + 1), "", "   ", "abc", f"{right} apples", f"{right}/1", "1e3", "__import__('os')",
                "9" * 5000, f"<answer>{right}</answer>", None, 32):
        assert not chain.check(bad, ex), bad


def test_uses_all_three_operations_and_two_to_four_steps():
    examples = chain.generate(300, seed=2)
    ops = {op for e in examples for op, _ in e.meta["ops"]}
    lengths = {len(e.meta["ops"]) for e in examples}
    assert ops == {"+", "-", "*"} and lengths == {2, 3, 4}
    assert all(re.fullmatch(r"[()0-9+*-]+", e.prompt) for e in examples)


def test_heldout_seed_never_overlaps_training_seeds():
    heldout = {e.prompt for e in chain.generate(300, seed=HELDOUT_SEED)}
    for seed in (0, 1, 100_000):
        assert heldout.isdisjoint(e.prompt for e in chain.generate(3000, seed=seed))


def test_bad_step_range_is_refused():
    from thinkrl.data.tasks import ChainTask

    with pytest.raises(ValueError):
        ChainTask(min_steps=3, max_steps=2)
