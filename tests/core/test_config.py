"""Config errors a user meets: unknown fields with a suggestion, bad values, bad YAML."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import Field

from thinkrl.config import Config, describe_fields, field_paths, load_config, parse_override, to_yaml
from thinkrl.errors import ConfigError


class Optim(Config):
    lr: float = Field(3e-4, description="learning rate")
    schedule: Literal["constant", "cosine"] = "constant"


class Train(Config):
    steps: int = 10
    optim: Optim = Optim()
    tags: list[str] = []


def test_defaults_file_and_overrides_compose(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\noptim:\n  lr: 0.1\n")
    cfg = load_config(Train, path, ["optim.schedule=cosine", "tags=[a, b]"])
    assert cfg.steps == 20 and cfg.optim.lr == 0.1 and cfg.optim.schedule == "cosine"
    assert cfg.tags == ["a", "b"]
    assert load_config(Train).optim.lr == 3e-4


def test_override_beats_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\n")
    assert load_config(Train, path, ["steps=5"]).steps == 5


def test_unknown_field_names_it_and_suggests_the_closest():
    with pytest.raises(ConfigError) as err:
        load_config(Train, None, ["optim.lrr=1"])
    msg = str(err.value)
    assert "optim.lrr" in msg and "did you mean 'optim.lr'" in msg
    assert "\n" not in msg


def test_unknown_top_level_section_in_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stepz: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config field 'stepz' \(did you mean 'steps'\?\)"):
        load_config(Train, path)


def test_mistyped_value_names_field_and_value():
    with pytest.raises(ConfigError) as err:
        load_config(Train, None, ["optim.lr=fast"])
    assert "optim.lr" in str(err.value) and "'fast'" in str(err.value)
    with pytest.raises(ConfigError, match="optim.schedule"):
        load_config(Train, None, ["optim.schedule=linear"])


def test_bad_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("steps: 3\noptim: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+ is not valid YAML"):
        load_config(Train, path)


def test_missing_file_and_bad_override_shape(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Train, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="section.field=value"):
        parse_override("steps")


def test_yaml_round_trip_and_help_rows():
    cfg = load_config(Train, None, ["optim.lr=0.5"])
    assert "lr: 0.5" in to_yaml(cfg)
    rows = {path: (default, doc) for path, default, doc in describe_fields(Train)}
    assert rows["optim.lr"] == ("0.0003", "learning rate")
    assert "optim" in field_paths(Train) and "optim.schedule" in field_paths(Train)


def test_overriding_one_field_keeps_the_commands_own_section_defaults():
    """ZeroConfig defaults its sections to instances (group 16, the R1-Zero template, the
    training split); setting another field of the section must not reset them."""
    from thinkrl.pipeline.zero import ZeroConfig

    cfg = load_config(ZeroConfig, None, ["rollout.top_p=0.9", "data.limit=4", "run.steps=3"])
    assert (cfg.rollout.group_size, cfg.rollout.top_p) == (16, 0.9)
    assert (cfg.data.template, cfg.data.task_seed, cfg.data.limit) == ("r1_zero", 0, 4)
    assert (cfg.run.output_dir, cfg.run.steps) == ("runs/zero", 3)
