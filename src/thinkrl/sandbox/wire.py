"""Plain data across the sandbox boundary: the only thing the program and the tests exchange.

A value crosses as one line of JSON in which every value is tagged with its exact type, so
the receiver rebuilds exactly None, bool, int, float, complex, str, bytes, list, tuple,
dict, set or frozenset, and nothing else: no pickle, no eval, no object of the sender's
choosing, so no `__eq__` that says True to everything. Decoding is bounded in size and
depth and rejects anything malformed with WireError. Standard library only: harness.py and
tester.py load this file by path.
"""

from __future__ import annotations

import json

MAX_DEPTH = 64
MAX_ITEMS = 1_000_000
_SEPARATORS = (",", ":")


class WireError(ValueError):
    """A value that is not plain data, or a message that is not well formed."""


def encode(value: object) -> list:
    """The tagged form of a plain value; WireError for anything else (subclasses included)."""
    budget = [MAX_ITEMS]
    return _encode(value, 0, budget)


def _spend(depth: int, budget: list[int]) -> None:
    """One more item at `depth`: WireError past the depth or item bound."""
    if depth > MAX_DEPTH:
        raise WireError("nested too deeply")
    budget[0] -= 1
    if budget[0] < 0:
        raise WireError("too many items")


def _encode(value: object, depth: int, budget: list[int]) -> list:
    _spend(depth, budget)
    kind = type(value)
    if value is None:
        return ["n"]
    if kind is bool:
        return ["b", value]
    if kind is int:
        return ["i", str(value)]  # JSON numbers lose big ints in some readers; a string does not
    if kind is float:
        return ["f", value.hex()]  # exact, and nan/inf included
    if kind is complex:
        return ["c", value.real.hex(), value.imag.hex()]
    if kind is str:
        return ["s", value]
    if kind is bytes:
        return ["y", value.hex()]
    if kind in (list, tuple, set, frozenset):
        tag = {list: "l", tuple: "t", set: "S", frozenset: "F"}[kind]
        return [tag, [_encode(item, depth + 1, budget) for item in value]]
    if kind is dict:
        return ["d", [[_encode(k, depth + 1, budget), _encode(v, depth + 1, budget)] for k, v in value.items()]]
    raise WireError(f"a {kind.__name__} is not plain data")


def decode(tagged: object) -> object:
    """Rebuild a value from its tagged form; WireError when the form is not one `encode` makes."""
    budget = [MAX_ITEMS]
    return _decode(tagged, 0, budget)


def _decode(tagged: object, depth: int, budget: list[int]) -> object:
    _spend(depth, budget)
    if type(tagged) is not list or not tagged or type(tagged[0]) is not str:
        raise WireError("not a tagged value")
    tag, body = tagged[0], tagged[1:]
    try:
        if tag == "n" and not body:
            return None
        if tag == "b" and len(body) == 1 and type(body[0]) is bool:
            return body[0]
        if tag == "i" and len(body) == 1 and type(body[0]) is str and _is_int_literal(body[0]):
            return int(body[0])
        if tag == "f" and len(body) == 1 and type(body[0]) is str:
            return float.fromhex(body[0])
        if tag == "c" and len(body) == 2 and all(type(part) is str for part in body):
            return complex(float.fromhex(body[0]), float.fromhex(body[1]))
        if tag == "s" and len(body) == 1 and type(body[0]) is str:
            return body[0]
        if tag == "y" and len(body) == 1 and type(body[0]) is str:
            return bytes.fromhex(body[0])
        if tag in ("l", "t", "S", "F") and len(body) == 1 and type(body[0]) is list:
            items = [_decode(item, depth + 1, budget) for item in body[0]]
            return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
        if tag == "d" and len(body) == 1 and type(body[0]) is list:
            pairs = body[0]
            if not all(type(pair) is list and len(pair) == 2 for pair in pairs):
                raise WireError("a malformed dict")
            return {_decode(k, depth + 1, budget): _decode(v, depth + 1, budget) for k, v in pairs}
    except (ValueError, TypeError, OverflowError) as exc:  # bad hex, unhashable key, huge int
        if isinstance(exc, WireError):
            raise
        raise WireError(f"a malformed {tag!r} value") from None
    raise WireError(f"unknown or malformed tag {tag!r}")


def _is_int_literal(text: str) -> bool:
    digits = text[1:] if text[:1] == "-" else text
    return 0 < len(digits) <= 4300 and digits.isascii() and digits.isdigit()


def dump_message(message: list) -> bytes:
    """One message: a JSON array on one line (JSON strings escape every newline)."""
    return json.dumps(message, separators=_SEPARATORS, ensure_ascii=True, allow_nan=False).encode("ascii") + b"\n"


def load_message(line: bytes, max_bytes: int) -> list:
    """Parse one line from the other side; WireError when it is too big or not a JSON array."""
    if len(line) > max_bytes:
        raise WireError(f"a message over {max_bytes} bytes")
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        raise WireError("a message that is not JSON") from None
    if type(message) is not list or not message or type(message[0]) is not str:
        raise WireError("a message that is not a tagged array")
    return message
