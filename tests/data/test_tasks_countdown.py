"""The countdown task: reachable targets, any valid expression accepted, hostile text rejected."""

from __future__ import annotations

import time

from thinkrl.data.example import Example
from thinkrl.data.tasks import HELDOUT_SEED, get_task

countdown = get_task("countdown")


def _example(numbers: list[int], target: int) -> Example:
    return Example(prompt="", answer=None, kind="countdown", meta={"numbers": numbers, "target": target})


def test_deterministic_and_reference_answers_check():
    a, b = countdown.generate(100, seed=5), countdown.generate(100, seed=5)
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]
    for ex in a:
        assert countdown.check(ex.answer, ex), ex
        assert ex.prompt.startswith(f"Make {ex.meta['target']} from ")
        assert ex.meta["target"] not in ex.meta["numbers"]
        assert 3 <= len(ex.meta["numbers"]) <= 4


def test_scratchpad_steps_are_true_and_end_at_the_target():
    for ex in countdown.generate(100, seed=6):
        steps = countdown.scratchpad(ex).split(" ")
        for step in steps:
            left, result = step.split("=")
            a, op, b = next(left.partition(o) for o in "+-*/" if o in left)
            assert {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b),
                    "/": int(a) / int(b)}[op] == int(result)
        assert int(steps[-1].split("=")[1]) == ex.meta["target"]


def test_any_valid_expression_is_accepted():
    ex = _example([3, 5, 7], 22)
    for ok in ("3*5+7", "7+5*3", "(5*3)+7", " 7 + 3 * 5 ", "3*5+7 = 22", "7+(3*5)"):
        assert countdown.check(ok, ex), ok
    ex2 = _example([2, 4, 8], 16)
    assert countdown.check("8*4/2", ex2) and countdown.check("8/(4/2)*4", _example([2, 4, 4, 8], 16))


def test_wrong_or_rule_breaking_answers_are_rejected():
    ex = _example([3, 5, 7], 22)
    for bad in ("3*5+6", "7+15", "3*5+7+0", "3*3+7+6", "5*5-3", "3*5+7 = 21", "22", "3*5+7=22=22",
                "(3*5)+7)", "3 5 7", "", "3**2+13", "-3+25", "3//1+19", "3.0*5+7", "7+5*3 if 1 else 0"):
        assert not countdown.check(bad, ex), bad


def test_hostile_answers_never_raise_or_hang():
    ex = _example([3, 5, 7], 22)
    hostile = [
        "__import__('os').system('echo pwned')", "open('/etc/passwd').read()", "(lambda: 22)()",
        "[22][0]", "x", "7/0+22", "9**9**9**9", "(" * 500 + "3" + ")" * 500, "1+" * 5000 + "1",
        "\x00", "3*5+7\n; import os", None, 22, b"3*5+7",
    ]
    start = time.perf_counter()
    for bad in hostile:
        assert countdown.check(bad, ex) is False
    assert time.perf_counter() - start < 1.0


def test_missing_meta_is_a_wrong_answer_not_a_crash():
    assert countdown.check("1+2", Example(prompt="", kind="countdown")) is False


def test_heldout_split_is_disjoint():
    key = lambda e: (tuple(sorted(e.meta["numbers"])), e.meta["target"])
    heldout = {key(e) for e in countdown.generate(200, seed=HELDOUT_SEED)}
    assert heldout.isdisjoint(key(e) for e in countdown.generate(2000, seed=0))
