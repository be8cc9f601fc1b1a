"""Config errors a user meets: unknown fields with a suggestion, bad values, bad YAML."""

from __future__ import annotations

from typing import ClassVar, Literal

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
    """ZeroConfig's sections have their own defaults (group 16, the R1-Zero template, the
    training split); setting another field of the section must not reset them."""
    from thinkrl.pipeline.zero import ZeroConfig

    cfg = load_config(ZeroConfig, None, ["rollout.top_p=0.9", "data.limit=4", "run.steps=3"])
    assert (cfg.rollout.group_size, cfg.rollout.top_p) == (16, 0.9)
    assert (cfg.data.template, cfg.data.task_seed, cfg.data.limit) == ("r1_zero", 0, 4)
    assert (cfg.run.output_dir, cfg.run.steps) == ("runs/zero", 3)


# ---------------------------------------------------------------- wrong shapes say what to write


class Term(Config):
    name: str = "accuracy"
    weight: float = 1.0


class Shapes(Config):
    renamed: ClassVar[dict[str, str]] = {"output_dir": "run.output_dir", "model": "model.name", "optim.rate": "optim.lr"}

    optim: Optim = Optim()
    terms: list[Term] = Field(default_factory=lambda: [Term()])
    by_kind: dict[str, list[Term]] = Field(default_factory=dict)
    split: str = "test"
    tags: list[str] = Field(default_factory=list)
    steps: int = 10
    flag: bool = False


def _error(overrides: list[str], model: type[Config] = Shapes) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(model, None, overrides)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("override, message", [
    ("optim=16", "config field 'optim': expected a mapping of fields such as {lr: 0.0003, schedule: constant} (got 16)"),
    ("terms=accuracy", "config field 'terms': expected a list like [{name: accuracy, weight: 1.0}] (got 'accuracy')"),
    ("terms=[accuracy]", ("config field 'terms[0]': expected a mapping of fields such as {name: accuracy, weight: 1.0} "
                          "(got 'accuracy')")),
    ("terms=[{weight: heavy}]", "config field 'terms[0].weight': expected a number such as 1.0 (got 'heavy')"),
    ("by_kind.math=accuracy", ("config field 'by_kind.math': expected a list like [{name: accuracy, weight: 1.0}] "
                               "(got 'accuracy')")),
    ("by_kind=accuracy", ("config field 'by_kind': expected a mapping like {key: [{name: accuracy, weight: 1.0}]} "
                          "(got 'accuracy')")),
    ("split=[a]", "config field 'split': expected a string such as test (got [a])"),
    ("tags=a", "config field 'tags': expected a list like [text] (got 'a')"),
    ("steps=many", "config field 'steps': expected a whole number such as 10 (got 'many')"),
    ("flag=maybe", "config field 'flag': expected true or false (got 'maybe')"),
    ("optim.schedule=linear", "config field 'optim.schedule': must be 'constant' or 'cosine' (got 'linear')"),
])
def test_a_value_of_the_wrong_shape_says_what_is_expected_with_an_example(override, message):
    assert _error([override]) == message


def test_the_real_commands_wrong_shapes():
    from thinkrl.data.config import DataConfig
    from thinkrl.pipeline.zero import ZeroConfig
    from thinkrl.train.config import GRPOConfig

    assert _error(["rollout=16"], ZeroConfig) == ("config field 'rollout': expected a mapping of fields such as "
                                                  "{batch_size: 256, prompts_per_step: 16} (got 16)")
    assert _error(["rewards=accuracy"], GRPOConfig) == ("config field 'rewards': expected a list like "
                                                        "[{name: accuracy, weight: 1.0}] (got 'accuracy')")
    assert _error(["data.split=[a]"], GRPOConfig) == "config field 'data.split': expected a string such as train (got [a])"
    assert _error(["model=some/ckpt"], GRPOConfig).startswith("config field 'model': expected a mapping of fields "
                                                              "such as {name: thinkrl/tiny")
    # a union is described whole, without pydantic's member tags in the field name
    assert _error(["model.lora.target_modules=5"], GRPOConfig) == (
        "config field 'model.lora.target_modules': expected a list like [text] or a string such as all-linear (got 5)")
    assert _error(["split=[test]"], DataConfig) == "config field 'split': expected a string such as test (got [test])"


def test_a_long_value_is_cut_in_the_message():
    msg = _error([f"split=[{', '.join(['x' * 10] * 20)}]"])
    assert msg.endswith("...)") and len(msg) < 200


def test_an_old_flat_name_names_the_new_field(tmp_path):
    assert _error(["output_dir=runs/x"]) == "config field 'output_dir' is now 'run.output_dir' (--set run.output_dir=runs/x)"
    assert _error(["model=m"]) == "config field 'model' is now 'model.name' (--set model.name=m)"
    assert _error(["optim.rate=0.1"]).startswith("config field 'optim.rate' is now 'optim.lr'")
    path = tmp_path / "old.yaml"
    path.write_text("output_dir: {nested: true}\n")
    with pytest.raises(ConfigError, match="^config field 'output_dir' is now 'run.output_dir'$"):
        load_config(Shapes, path)


def test_a_section_that_took_an_old_name_is_not_mistaken_for_it():
    class Renamed(Config):
        renamed: ClassVar[dict[str, str]] = {"model": "model.name"}
        model: Term = Term()

    assert load_config(Renamed, None, ["model.name=m"]).model.name == "m"
    assert _error(["model=m"], Renamed) == "config field 'model' is now 'model.name' (--set model.name=m)"


def test_old_names_are_found_inside_nested_sections():
    from thinkrl.pipeline.distill import DistillConfig

    assert _error(["teacher.output_dir=x"], DistillConfig) == (
        "config field 'teacher.output_dir' is now 'teacher.run.output_dir' (--set teacher.run.output_dir=x)")
    assert _error(["output_dir=x"], DistillConfig).startswith("config field 'output_dir' is now 'run.output_dir'")
