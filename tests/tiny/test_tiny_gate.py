"""The real default (`thinkrl/tiny`, seed 0): a base that RL can improve. Built once into the
cache (~/.cache/thinkrl or $THINKRL_CACHE), a few minutes on a laptop CPU, then reused."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from thinkrl.data.tasks import get_task
from thinkrl.tiny.build import ensure_tiny
from thinkrl.tiny.gate import evaluate_gate


@pytest.mark.slow
def test_default_tiny_thinks_well_when_made_to_and_guesses_otherwise():
    folder = ensure_tiny(seed=0)
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    tok = AutoTokenizer.from_pretrained(str(folder))
    assert 300_000 < sum(p.numel() for p in model.parameters()) < 1_000_000
    # Measured again here, not read back: the saved weights must carry the gate.
    report = evaluate_gate(model, tok, get_task("chain"), problems=200, samples=2)
    assert report.forced_think_accuracy >= 0.8
    assert report.greedy_accuracy <= 0.4
    assert 0.05 <= report.sampled_think_rate <= 0.7
    assert report.sampled_accuracy < report.forced_think_accuracy
    saved = json.loads((folder / "gate.json").read_text())
    assert saved["passed"] and saved["forced_think_accuracy"] == pytest.approx(report.forced_think_accuracy, abs=0.02)


@pytest.mark.slow
def test_the_dry_run_sizes_the_tiny_default_by_name():
    from thinkrl.train.dry_run import dry_run

    model = AutoModelForCausalLM.from_pretrained(str(ensure_tiny(seed=0)))
    report = dry_run("thinkrl/tiny@0", "thinkrl/tiny@0", dtype="float32", seq_len=64)
    assert report.total_params == sum(p.numel() for p in model.parameters())
    assert report.config_source == "thinkrl tiny default"
    assert report.tokenizer_vocab == len(AutoTokenizer.from_pretrained(str(ensure_tiny(seed=0))))
