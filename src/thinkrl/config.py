"""Typed configs: YAML files and `--set a.b=value` overrides validated by pydantic models.

Every command has one config model (a `Config` subclass). A wrong field name or value
becomes one `ConfigError` line that names the field and, for a typo, the closest valid name;
a value of the wrong shape gets what the field expects, with an example (config_hints.py).

Defaults live in the classes only, never in a default *instance* (`rollout =
RolloutConfig(group_size=16)`): pydantic builds a section given as a mapping from its class
defaults, so an instance default would hold for `ZeroConfig()` and silently vanish for
`--set rollout.top_p=0.9`. A command that needs other defaults subclasses the section.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from thinkrl.config_hints import SHAPE_ERRORS, expected, locate, renamed_field, shown
from thinkrl.errors import ConfigError

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base for every config section: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True, protected_namespaces=())
    # old dotted field name -> its new one: an old YAML or --set fails naming where it went
    renamed: ClassVar[dict[str, str]] = {}


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """All dotted field names of a config model, nested sections included."""
    paths = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            paths.extend(field_paths(sub, prefix=f"{path}."))
    return paths


def _suggest(bad: str, valid: Iterable[str]) -> str:
    match = difflib.get_close_matches(bad, list(valid), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _format_error(model: type[BaseModel], err: ValidationError) -> str:
    first = err.errors()[0]
    if first["type"] == "extra_forbidden":
        path = ".".join(str(p) for p in first["loc"])
        return f"unknown config field '{path}'{_suggest(path, field_paths(model))}"
    if not first["loc"]:  # a check across fields (model validator): its message names them
        return f"config: {first['msg'].removeprefix('Value error, ')}"
    path, annotation, default = locate(model, tuple(first["loc"]))
    want = expected(annotation, default) if first["type"] in SHAPE_ERRORS else None
    what = f"expected {want}" if want else _plain(first["msg"])
    return f"config field '{path}': {what} (got {shown(first.get('input'))})"


def _plain(message: str) -> str:
    """pydantic's words for a bad value, as a rule about the field: 'must be ... (got x)'."""
    return message.removeprefix("Value error, ").replace("Input should be", "must be", 1)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=1` -> (['a', 'b'], 1); the value is read as YAML so numbers, bools and lists work."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like section.field=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has no field name")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[keys[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(data).__name__}")
    return data


def build_config(model: type[C], data: dict[str, Any]) -> C:
    renamed = renamed_field(model, data)
    if renamed:
        raise ConfigError(renamed)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(model, err)) from None


def merge_dicts(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`: nested mappings are merged key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in top.items():
        nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = merge_dicts(merged[key], value) if nested else value
    return merged


def load_config(model: type[C], path: str | Path | None = None, overrides: Iterable[str] = ()) -> C:
    """The resolved config: model defaults <- YAML file <- `--set` overrides."""
    data = read_yaml(path) if path else {}
    return build_config(model, apply_overrides(data, overrides))


def to_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def describe_fields(model: type[BaseModel], prefix: str = "", defaults: BaseModel | None = None
                    ) -> list[tuple[str, str, str]]:
    """(dotted name, default, description) for every leaf field: the body of `--help`.
    A section's defaults are those of the instance its parent defaults to, if it has one."""
    rows = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        sub = info.annotation
        own = getattr(defaults, name) if defaults is not None else info.get_default(call_default_factory=True)
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            rows.extend(describe_fields(sub, prefix=f"{path}.", defaults=own if isinstance(own, BaseModel) else None))
            continue
        if isinstance(own, (list, tuple)) and own and all(isinstance(v, BaseModel) for v in own):
            own = [v.model_dump(mode="json") for v in own]  # what one writes in YAML, not the classes' repr
        rows.append((path, repr(own), info.description or ""))
    return rows
