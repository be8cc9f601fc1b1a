"""Asynchronous rollouts (rollout.max_staleness): a real sampler process k steps ahead, the
staleness it reports, the correction it turns on, and a crash + --resume that trains on the
very samples the unbroken run trained on."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file
from test_train_grpo import small_config

from thinkrl.errors import ConfigError
from thinkrl.train import grpo
from thinkrl.train.grpo import train_grpo
from thinkrl.train.tracking import read_metrics

SETTINGS = ["run.steps=4", "run.save_every=1", "optim.lr=0.01", "rollout.max_staleness=1"]


def test_one_step_stale_rollouts_train_and_report_their_staleness(tiny_random_model, tmp_path):
    sync = read_metrics(train_grpo(small_config(tiny_random_model, tmp_path / "sync", *SETTINGS[:3])).run_dir
                        / "metrics.jsonl")
    stale = read_metrics(train_grpo(small_config(tiny_random_model, tmp_path / "async", *SETTINGS)).run_dir
                         / "metrics.jsonl")
    assert [r["async/staleness_max"] for r in stale] == [0, 1, 1, 1]  # steps 1 and 2 both from the start weights
    assert stale[0]["reward/mean"] == sync[0]["reward/mean"] and stale[0]["loss"] == pytest.approx(sync[0]["loss"])
    assert all(r["mismatch/kl"] > 1e-7 for r in stale[2:])  # sampled by the policy one update back
    assert all("async/staleness_max" not in r for r in sync)
    assert sum(r["grad_norm"] > 0 for r in stale) >= 2  # it trains (a step whose group agrees has none)


def test_a_crash_then_resume_trains_on_the_unbroken_runs_samples(tiny_random_model, tmp_path, monkeypatch):
    unbroken = read_metrics(train_grpo(small_config(tiny_random_model, tmp_path / "unbroken", *SETTINGS)).run_dir
                            / "metrics.jsonl")
    real, calls = grpo.update_policy, []

    def crash_at_step_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(grpo, "update_policy", crash_at_step_3)
    broken = tmp_path / "broken"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_grpo(small_config(tiny_random_model, broken, *SETTINGS))
    monkeypatch.setattr(grpo, "update_policy", real)
    train_grpo(small_config(tiny_random_model, broken, *SETTINGS, "resume=true"))
    got = read_metrics(broken / "metrics.jsonl")
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(got, unbroken):
        for key in ("reward/mean", "completion/length_mean", "loss", "async/staleness_max", "mismatch/kl"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["step"], key)
    w1, w2 = load_file(str(broken / "final" / "model.safetensors")), load_file(str(tmp_path / "unbroken" / "final"
                                                                                  / "model.safetensors"))
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-5


def test_what_asynchronous_rollouts_do_not_support_yet_is_refused(tiny_random_model, tmp_path):
    cfg = small_config(tiny_random_model, tmp_path, "rollout.max_staleness=1", "algo.curriculum=pass_rate")
    with pytest.raises(ConfigError, match="curriculum"):
        train_grpo(cfg)
