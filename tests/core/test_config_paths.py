"""One way to build a config: for every command, a section given in part comes out the same
whether it is passed to the constructor, to model_validate, in a YAML file, as --set
overrides, or as a pipeline stage's config, and every field left out keeps the command's
own default (ZeroConfig's group of 16 must survive `--set rollout.top_p=0.9`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, get_origin

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from thinkrl.commands import COMMANDS
from thinkrl.config import Config, build_config, load_config
from thinkrl.pipeline.stages import KINDS

# a command config that cannot validate from nothing: the least it needs
BASE: dict[str, dict[str, Any]] = {"pipeline": {"stages": [{"name": "e", "command": "eval"}]}}


def _sections(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """(dotted name, class) of every section of a config model, nested ones included."""
    found = []
    for name, info in model.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            found.append((f"{prefix}{name}", sub))
            found.extend(_sections(sub, f"{prefix}{name}."))
    return found


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    if isinstance(value, str):
        return f"{value}-changed" if value else "changed"
    return None


def _one_field(section: type[BaseModel]) -> tuple[str, Any] | None:
    """A field of the section and a non-default value the section alone accepts."""
    for name, info in section.model_fields.items():
        default = info.get_default(call_default_factory=True)
        value = _changed(default)
        if value is None or get_origin(info.annotation) is Literal:
            continue
        try:
            section.model_validate({name: value})
        except ValidationError:
            continue
        return name, value
    return None


def _nested(path: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for key in reversed(path.split(".")):
        out = {key: out}
    return out


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in top.items():
        nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merged(merged[key], value) if nested else value
    return merged


def _set(dump: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        dump = dump.setdefault(key, {})
    dump[last] = value


def _cases() -> list[tuple[str, str, Any]]:
    cases = []
    for cmd in COMMANDS:
        model = cmd.config_model()
        for path, section in _sections(model):
            picked = _one_field(section)
            if picked is not None:
                cases.append((cmd.name, f"{path}.{picked[0]}", picked[1]))
        if not _sections(model):  # a flat config (tiny, reward): one of its own fields
            picked = _one_field(model)
            assert picked is not None, cmd.name
            cases.append((cmd.name, picked[0], picked[1]))
    return cases


CASES = _cases()


def test_every_command_and_every_section_is_covered():
    names = {cmd.name for cmd in COMMANDS}
    assert {name for name, _, _ in CASES} == names
    paths = {(name, path.rsplit(".", 1)[0]) for name, path, _ in CASES}
    assert {("zero", "rollout"), ("zero", "run"), ("zero", "data"), ("vllm-serve", "vllm"), ("eval", "run"),
            ("sample", "model"), ("distill", "teacher.run"), ("pipeline", "run"), ("serve", "model")} <= paths


@pytest.mark.parametrize("command, path, value", CASES, ids=[f"{c}:{p}" for c, p, _ in CASES])
def test_every_construction_path_agrees(command, path, value, tmp_path):
    cmd = next(c for c in COMMANDS if c.name == command)
    model: type[Config] = cmd.config_model()
    base = BASE.get(command, {})
    data = _merged(base, _nested(path, value))

    built = {
        "constructor": model(**copy.deepcopy(data)),
        "model_validate": model.model_validate(copy.deepcopy(data)),
        "build_config": build_config(model, copy.deepcopy(data)),
    }
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(data))
    built["yaml"] = load_config(model, config_file)
    base_file = tmp_path / "base.yaml"
    base_file.write_text(yaml.safe_dump(base))
    built["--set"] = load_config(model, base_file, [f"{path}={yaml.safe_dump(value).splitlines()[0]}"])

    # the command's own defaults, with only the one field changed
    expected = model.model_validate(copy.deepcopy(base)).model_dump()
    _set(expected, path, value)
    for way, cfg in built.items():
        assert cfg.model_dump() == expected, f"{command} built through {way} lost a default of {path.rsplit('.', 1)[0]}"

    if command in KINDS:
        _check_as_pipeline_stage(command, data, expected, config_file, tmp_path)


def _check_as_pipeline_stage(command: str, data: dict[str, Any], expected: dict[str, Any], config_file: Path,
                             tmp_path: Path) -> None:
    """The same config as a stage, inline and through config_file, built as the runner builds it."""
    from thinkrl.pipeline.runner import PipelineConfig, stage_config

    kind = KINDS[command]
    folder = tmp_path / "run" / "s"
    want = copy.deepcopy(expected)
    _set(want, ".".join(kind.output_field), str(folder))
    if kind.resume_field:
        want[kind.resume_field] = False
    for stage in ({"name": "s", "command": command, "config": data},
                  {"name": "s", "command": command, "config_file": str(config_file)}):
        pipeline = build_config(PipelineConfig, {"run": {"output_dir": str(tmp_path / "run")}, "stages": [stage]})
        spec = pipeline.stages[0]
        assert stage_config(spec, spec.merged_config(), folder, False).model_dump() == want


def _instance_defaults(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Sections whose default is an instance that differs from its own class defaults."""
    bad = []
    for name, info in model.model_fields.items():
        default = info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            if default.model_dump() != type(default)().model_dump():
                bad.append(f"{prefix}{name}")
            bad.extend(_instance_defaults(type(default), f"{prefix}{name}."))
    return bad


def test_no_section_defaults_to_an_instance_other_than_its_class_defaults():
    """Pydantic builds a section given as a mapping from its class: an instance default such
    as `RolloutConfig(group_size=16)` would hold only when the section is not given at all."""
    for cmd in COMMANDS:
        assert _instance_defaults(cmd.config_model()) == [], cmd.name


def test_zero_keeps_its_group_of_16_on_every_path(tmp_path):
    from thinkrl.pipeline.zero import ZeroConfig

    assert ZeroConfig(rollout={"top_p": 0.9}).rollout.group_size == 16
    assert load_config(ZeroConfig, None, ["rollout.top_p=0.9"]).rollout.group_size == 16
    assert ZeroConfig.model_validate({"run": {"steps": 3}}).run.output_dir == "runs/zero"
