"""The parent's side of the verdict: splitting tests into units, and reading the result channel."""

from __future__ import annotations

import pytest

from thinkrl.sandbox.plan import PlanError, plan_tests
from thinkrl.sandbox.verdict import Exit, decide, parse_records

NONCE = "ab" * 16


def test_humaneval_check_is_split_into_its_asserts():
    tests = "M = 1\n\ndef check(candidate):\n    import math\n    assert candidate(1) == 2\n    for x in range(3):\n        assert candidate(x) > x\n    y = 3\n    assert candidate(y) == 4\n\ncheck(inc)\n"
    plan = plan_tests(tests)
    assert plan.total == 3
    assert [s.is_unit for s in plan.steps] == [False, True, True, False, True]
    assert plan.candidate_name == "candidate" and plan.candidate_expr == "inc"
    assert "check(inc)" not in plan.setup and "M = 1" in plan.setup


def test_plain_asserts_and_fallbacks():
    assert plan_tests("assert f(1) == 1\nx = 2\nassert f(x) == 2\n", "f").total == 2
    assert plan_tests("f(1)\n").total == 1  # no assert: one unit, passes if it runs
    returns_early = "def check(candidate):\n    if candidate(0):\n        return\n    assert candidate(1)\n"
    plan = plan_tests(returns_early, "f")
    assert plan.total == 1 and plan.steps[0].source == "check(candidate)"


def test_unrunnable_tests_are_plan_errors():
    with pytest.raises(PlanError, match="do not parse"):
        plan_tests("assert (")
    with pytest.raises(PlanError, match="entry_point"):
        plan_tests("def check(candidate):\n    assert candidate()\n")


def _lines(*records: str) -> bytes:
    return b"".join(f"{NONCE} {i} {r}\n".encode() for i, r in enumerate(records))


def test_only_authenticated_consecutive_records_count():
    good = _lines("ready {}", "program ok", "unit 0 pass", "unit 1 fail AssertionError", "done 2")
    records = parse_records(good, NONCE)
    assert decide(records, 2, Exit(code=0))[:3] == ("failed", 1, ["pass", "fail"])
    forged = good.replace(NONCE.encode(), b"cd" * 16, 1)
    assert parse_records(forged, NONCE).tampered
    skipped = _lines("ready {}", "program ok").replace(b" 1 program", b" 2 program")
    assert parse_records(skipped, NONCE).tampered
    assert parse_records(good + b"junk", NONCE).tampered
    assert decide(parse_records(_lines("ready {}", "done 5"), NONCE), 2, Exit(code=0))[0] == "tampered"


def test_missing_final_record_never_passes():
    partial = parse_records(_lines("ready {}", "program ok", "unit 0 pass"), NONCE)
    assert decide(partial, 2, Exit(code=0))[:2] == ("exited", 1)
    assert decide(partial, 2, Exit(code=137))[0] == "crashed"
    assert decide(partial, 2, Exit(code=137, timed_out=True))[0] == "timeout"
    assert decide(partial, 2, Exit(code=128 + 24))[0] == "timeout"  # SIGXCPU
    assert decide(partial, 2, Exit(code=137, output_exceeded=True))[0] == "output_limit"
    assert decide(parse_records(b"", NONCE), 1, Exit(code=0))[:2] == ("exited", 0)


def test_tests_see_only_the_entry_point_or_their_free_names():
    humaneval = "def check(candidate):\n    assert candidate(encode(1)) == 1\n\ncheck(decode)\n"
    assert plan_tests(humaneval, "decode").exposed == ("decode",)  # encode: from the prelude, or missing
    plain = "import math\nx = 2\nassert f(x) == g(math.pi)\nassert abs(f(1)) == len([1])\n"
    assert plan_tests(plain).exposed == ("f", "g")  # builtins, imports and the tests' own names are never the program's
    assert plan_tests(plain, prelude="def g(y):\n    return y\n").exposed == ("f",)
    assert plan_tests(plain, "f").exposed == ("f",)
    with pytest.raises(PlanError, match="expression"):
        plan_tests("def check(candidate):\n    assert candidate()\n\ncheck(lambda: 1)\n")


def test_plain_data_crosses_exactly_and_nothing_else_does():
    from fractions import Fraction

    from thinkrl.sandbox.wire import WireError, decode, dump_message, encode, load_message

    value = [None, True, 0, -(10**40), 1.5, float("inf"), complex(1, -2), "é\n", b"\x00\xff", (1, (2,)),
             {"a": [1], 2: {3}}, frozenset({4}), set()]
    back = decode(load_message(dump_message(["ok", encode(value)]), 10**6)[1])
    assert back == value and [type(v) for v in back] == [type(v) for v in value]
    assert b"\n" not in dump_message([encode("a\nb")])[:-1]

    class Eq(int):
        def __eq__(self, other):
            return True

    for bad in (Eq(1), [Eq(1)], {"k": Fraction(1, 2)}, lambda: 1, iter([1]), type):
        with pytest.raises(WireError):
            encode(bad)
    nested: list = []
    for _ in range(100):
        nested = [nested]
    with pytest.raises(WireError, match="deeply"):
        encode(nested)
    for forged in (["x"], ["i", "1e5"], ["i", "0x10"], ["l", "abc"], ["d", [[["l", []], ["n"]]]], ["S", [["l", []]]], 5, []):
        with pytest.raises(WireError):
            decode(forged)
    with pytest.raises(WireError, match="bytes"):
        load_message(b"[" + b"1," * 100 + b"1]", 50)
    with pytest.raises(WireError):
        load_message(b"{\"a\": 1}", 100)
