"""The demo end to end on the real tiny default: reasoning emerges from rewards alone, and
the shuffled-reward control does not learn. Shortened (fewer steps, fewer eval problems)
to fit the suite; `make demo` runs the full length."""

from __future__ import annotations

import json

import pytest

from thinkrl.pipeline.demo import DemoConfig, run_demo


@pytest.mark.slow
def test_demo_learns_to_think_and_the_control_does_not(tmp_path):
    common = {"eval_size": 48, "eval_k": 2, "lr": 3e-4}
    trained = run_demo(DemoConfig(**common, run={"seed": 0, "steps": 30, "output_dir": str(tmp_path / "demo")}))
    before, after = trained["before"], trained["after"]
    assert after["pass_at_1"] >= before["pass_at_1"] + 0.2
    assert after["format_rate"] >= 0.9
    assert after["mean_response_tokens"] > before["mean_response_tokens"]
    plots = tmp_path / "demo" / "train" / "plots"
    for name in ("overview.png", "accuracy.png", "kl.png", "completion_length_mean.png"):
        assert (plots / name).is_file(), name
    assert (tmp_path / "demo" / "train" / "samples.jsonl").is_file()
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["after"]["pass_at_1"] == after["pass_at_1"]

    # into the same folder, as a second `make demo` would: the demo replaces its last run
    control = run_demo(DemoConfig(**common, control="shuffle",
                                  run={"seed": 0, "steps": 30, "output_dir": str(tmp_path / "demo")}))
    assert control["after"]["pass_at_1"] < before["pass_at_1"] + 0.1


def test_full_demo_refuses_settings_its_recipe_would_ignore(tmp_path):
    from thinkrl.config import load_config
    from thinkrl.errors import ConfigError

    cfg = load_config(DemoConfig, None, ["full=true", "run.seed=3", "run.steps=5", f"run.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="run.seed, run.steps would be ignored.*thinkrl pipeline"):
        run_demo(cfg)
    assert not (tmp_path / "mini-r1").exists()
    cfg = load_config(DemoConfig, None, ["full=true", "model.name=m", "lr=0.1", "run.torch_threads=1"])
    with pytest.raises(ConfigError, match="lr, model.name would be ignored"):
        run_demo(cfg)


def test_demo_fields_share_the_other_commands_names():
    from thinkrl.config import load_config
    from thinkrl.errors import ConfigError
    from thinkrl.pipeline.demo import grpo_config

    cfg = load_config(DemoConfig, None, ["model.name=m", "run.seed=2", "run.steps=6", "run.output_dir=out"])
    grpo = grpo_config(cfg)
    assert (grpo.model.name, grpo.run.seed, grpo.run.steps, grpo.run.output_dir) == ("m", 2, 6, "out/train")
    assert grpo_config(load_config(DemoConfig, None, ["run.seed=2"])).model.name == "thinkrl/tiny@2"
    for item, new in [("seed=1", "run.seed"), ("steps=5", "run.steps"), ("model=m", "model.name"),
                      ("output_dir=x", "run.output_dir")]:
        with pytest.raises(ConfigError, match=f"is now '{new}'"):
            load_config(DemoConfig, None, [item])
