"""Algorithms by name: the seam that lets a researcher add an advantage estimator, a policy
loss or an aggregation as one decorated function, chosen from YAML.

A registered function is pure: its positional parameters are the tensors and numbers the
trainer supplies (by name: `rewards`, `group_size`, `lengths`; `logp`, `old_logp`,
`advantages`, `mask`, ...), its keyword-only parameters are the options a user sets
(`algo.loss_options: {clip_c: 3.0}`), with their defaults in the signature. Options are
checked against that signature when the config is read, so a typo fails before any model
is loaded, with the names that exist.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError


class Registry:
    """Named functions of one kind ("advantage", "loss", "aggregation")."""

    def __init__(self, kind: str, inputs: tuple[str, ...]) -> None:
        self.kind = kind
        self.inputs = inputs  # what the trainer can pass, by parameter name
        self._functions: dict[str, Callable[..., Any]] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: `@ADVANTAGES.register("rloo")`. The function's positional parameters
        must be among `inputs`; its keyword-only ones become options. `meta`: facts the
        trainer needs about it (an aggregation's `unit`)."""

        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._functions and self._functions[name] is not fn:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._functions[name].__module__})")
            unknown = [p for p in _positional(fn) if p not in self.inputs]
            if unknown:
                raise TypeError(f"{self.kind} {name!r}: positional parameters {unknown} are not inputs the trainer "
                                f"supplies ({', '.join(self.inputs)}); make options keyword-only (after *)")
            self._functions[name] = fn
            self._meta[name] = meta
            return fn

        return add

    def names(self) -> list[str]:
        return sorted(self._functions)

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._functions:
            close = difflib.get_close_matches(name, self._functions, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}{hint} (registered: {', '.join(self.names())})")
        return self._functions[name]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._meta[name]

    def options(self, name: str) -> dict[str, Any]:
        """The function's options and their defaults (inspect.Parameter.empty: required)."""
        params = inspect.signature(self.get(name)).parameters.values()
        return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def check_options(self, name: str, options: Mapping[str, Any]) -> None:
        """Raise ValueError naming any option the function does not take, or a missing one."""
        allowed = self.options(name)
        for key in options:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                takes = ", ".join(allowed) or "no options"
                raise ValueError(f"{self.kind} {name!r} has no option {key!r}{hint} (it takes: {takes})")
        missing = [k for k, v in allowed.items() if v is inspect.Parameter.empty and k not in options]
        if missing:
            raise ValueError(f"{self.kind} {name!r} needs option(s) {missing}")
        hints = typing.get_type_hints(self.get(name))
        for key, value in options.items():
            if key in hints:
                try:
                    TypeAdapter(hints[key]).validate_python(value, strict=isinstance(value, bool))
                except ValidationError:
                    raise ValueError(f"{self.kind} {name!r}: option {key!r} must be {_type_name(hints[key])} "
                                     f"(got {value!r})") from None

    def call(self, name: str, options: Mapping[str, Any] | None = None, **inputs: Any) -> Any:
        """Run `name` with the inputs its signature asks for and the given options."""
        fn = self.get(name)
        options = dict(options or {})
        self.check_options(name, options)
        wanted = _positional(fn)
        missing = [p for p in wanted if p not in inputs]
        if missing:
            raise TypeError(f"{self.kind} {name!r} needs {missing}, which the caller did not supply")
        return fn(*(inputs[p] for p in wanted), **options)

    def describe(self) -> str:
        """One line per function: name, options with defaults, the docstring's first paragraph."""
        lines = []
        for name in self.names():
            fn = self._functions[name]
            opts = ", ".join(f"{k}={'(required)' if v is inspect.Parameter.empty else v!r}"
                             for k, v in self.options(name).items())
            summary = " ".join((inspect.getdoc(fn) or "").split("\n\n")[0].split())  # the first paragraph
            lines.append(f"{name}({opts}): {summary}" if opts else f"{name}: {summary}")
        return "\n".join(lines)


def _positional(fn: Callable[..., Any]) -> list[str]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in inspect.signature(fn).parameters.values() if p.kind in kinds]


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return " or ".join(repr(v) for v in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint))
