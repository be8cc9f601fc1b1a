"""What a config field expects, said with an example: the words of a wrong-shape error.

`--set rewards=accuracy` or `rollout: 16` fail deep inside pydantic with "Input should be a
valid list"; a user needs to hear what to write instead. These helpers walk a config model
to the field an error points at and describe its type with a small example built from the
field's own defaults. They also catch old flat field names (a model's `renamed` map) before
validation, so an old YAML fails with the new name rather than a bare "unknown field".
"""

from __future__ import annotations

import copy
import types
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

# pydantic error types that mean "the value has the wrong shape or type" (not a bad value of the right type)
SHAPE_ERRORS = {
    "model_type", "model_attributes_type", "dict_type", "list_type", "tuple_type", "set_type", "string_type",
    "int_type", "int_parsing", "int_from_float", "float_type", "float_parsing", "bool_type", "bool_parsing",
}
_SCALARS = (str, int, float, bool)
_EXAMPLE_ITEMS = {str: "text", int: 1, float: 1.0, bool: True}


def flow(value: Any) -> str:
    """`value` as one line of YAML flow style, as a user would write it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def shown(value: Any, limit: int = 60) -> str:
    """A given value, short enough for a one-line error."""
    text = flow(value) if isinstance(value, (dict, list)) else repr(value)
    if len(text) > limit:
        return "a mapping" if isinstance(value, dict) else f"{text[:limit]}..."
    return text


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _without_none(tp: Any) -> Any:
    """`X | None` -> X (pydantic reports a nullable field's errors against X itself)."""
    if _is_union(tp):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def example_mapping(model: type[BaseModel], default: Any = None, size: int = 2) -> dict[str, Any]:
    """The first few scalar fields of a section with their defaults, `{prompts_per_step: 16,
    group_size: 8}`; fields with a fixed set of choices only when there is nothing else."""
    scalar, choices = {}, {}
    for name, info in model.model_fields.items():
        value = getattr(default, name) if isinstance(default, model) else info.get_default(call_default_factory=True)
        if isinstance(value, _SCALARS) and value != "":
            (choices if get_origin(info.annotation) is Literal else scalar)[name] = value
    return dict(list({**scalar, **choices}.items())[:size])


def _example_item(tp: Any, default: Any) -> Any:
    tp = _without_none(tp)
    origin, args = get_origin(tp), get_args(tp)
    if _is_model(tp):
        return example_mapping(tp, default)
    if origin in (list, tuple, set):
        return [_example_item(args[0] if args else Any, None)]
    if origin is dict:
        return {"key": _example_item(args[1] if len(args) == 2 else Any, None)}
    if get_origin(tp) is Literal:
        return get_args(tp)[0]
    if isinstance(default, _SCALARS):
        return default
    return _EXAMPLE_ITEMS.get(tp, "...")


def expected(tp: Any, default: Any = None) -> str | None:
    """'a mapping of fields such as {...}', 'a list like [...]', ... for a field's type; None
    where pydantic's own words are already the best (a Literal lists its choices)."""
    tp = _without_none(tp)
    origin, args = get_origin(tp), get_args(tp)
    if _is_model(tp):
        return f"a mapping of fields such as {flow(example_mapping(tp, default))}"
    if origin in (list, tuple, set):
        first = default[0] if isinstance(default, (list, tuple)) and default else None
        return f"a list like {flow([_example_item(args[0] if args else Any, first)])}"
    if origin is dict:
        value = _example_item(args[1], None) if len(args) == 2 else "value"
        return f"a mapping like {flow({'key': value})}"
    if _is_union(tp):
        parts = [expected(arg, default) for arg in args if arg is not type(None)]
        return " or ".join(p for p in parts if p) or None
    if tp is bool:
        return "true or false"
    if tp is str:
        return f"a string such as {flow(default) if isinstance(default, str) and default else 'text'}"
    if tp is int:
        return f"a whole number such as {default if isinstance(default, int) and not isinstance(default, bool) else 1}"
    if tp is float:
        return f"a number such as {default if isinstance(default, (int, float)) and not isinstance(default, bool) else 1.0}"
    return None


def locate(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, Any, Any]:
    """(dotted path as a user writes it, annotation, default) of the value an error points at.

    Union member tags pydantic adds to a location (`target_modules.list[str]`) are dropped:
    the error is then described against the whole union."""
    tp: Any = model
    default: Any = None
    parts: list[str] = []
    for key in loc:
        tp = _without_none(tp)
        if _is_model(tp) and isinstance(key, str) and key in tp.model_fields:
            info = tp.model_fields[key]
            default = getattr(default, key) if isinstance(default, tp) else info.get_default(call_default_factory=True)
            tp = info.annotation
            parts.append(key)
        elif get_origin(tp) in (list, tuple, set) and isinstance(key, int):
            args = get_args(tp)
            default = default[0] if isinstance(default, (list, tuple)) and default else None
            tp = args[0] if args else Any
            parts[-1:] = [f"{parts[-1]}[{key}]" if parts else f"[{key}]"]
        elif get_origin(tp) is dict and not _is_union(tp):
            args = get_args(tp)
            tp, default = (args[1] if len(args) == 2 else Any), None
            parts.append(str(key))
        elif _is_union(tp):
            break  # a member tag: describe the whole union
        else:
            parts.append(str(key))
            tp, default = Any, None
    return ".".join(parts), tp, default


def renamed_field(model: type[BaseModel], data: Any, prefix: str = "") -> str | None:
    """An error line for the first old field name in `data` (a model's `renamed` map: old
    dotted path -> new one), looking into nested sections; None when there is none.

    An old name that became a section (`model: x` -> `model.name`) counts only when it is
    given a plain value: `model: {name: x}` is the new shape."""
    if not isinstance(data, dict):
        return None
    for old, new in getattr(model, "renamed", {}).items():
        found, value = _lookup(data, old.split("."))
        if not found or (new.startswith(f"{old}.") and isinstance(value, dict)):
            continue
        hint = f" (--set {prefix}{new}={flow(value)})" if isinstance(value, _SCALARS) else ""
        return f"config field '{prefix}{old}' is now '{prefix}{new}'{hint}"
    for name, info in model.model_fields.items():
        sub = _without_none(info.annotation)
        if _is_model(sub) and isinstance(data.get(name), dict):
            line = renamed_field(sub, data[name], f"{prefix}{name}.")
            if line:
                return line
    return None


def with_new_names(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """`data` as an earlier version wrote it (a stored config.yaml), its old field names moved
    to the new ones, so a run folder from before a rename still resumes. Renames apply in the
    order the model lists them (a section's own name first: `model` before `dtype`)."""
    out = copy.deepcopy(data)
    for old, new in getattr(model, "renamed", {}).items():
        found, value = _lookup(out, old.split("."))
        if not found or (new.startswith(f"{old}.") and isinstance(value, dict)):
            continue
        *parents, last = old.split(".")
        _lookup(out, parents)[1].pop(last)
        node = out
        *parents, last = new.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[last] = value
    return out


def _lookup(data: dict[str, Any], keys: list[str]) -> tuple[bool, Any]:
    node: Any = data
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node
