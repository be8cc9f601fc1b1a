"""Building a tiny checkpoint (small quick settings): an ordinary HF checkpoint, cached,
atomic, locked. The real default is checked in test_tiny_gate.py (slow)."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from thinkrl.config import load_config
from thinkrl.errors import ConfigError
from thinkrl.tiny.build import build_tiny, checkpoint_dir, is_built, run_tiny
from thinkrl.tiny.config import TinyConfig

QUICK = {"steps": 12, "batch_size": 8, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
             "gate_problems": 10, "gate_samples": 1, "extra_rounds": 1, "extra_steps": 3}


def quick(folder, **kw) -> TinyConfig:
    return TinyConfig(output_dir=str(folder), **{**QUICK, **kw})


def test_quick_build_loads_with_auto_classes_and_generates(tmp_path):
    folder, report, seconds = build_tiny(quick(tmp_path / "tiny"))
    assert seconds is not None and is_built(folder)
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    tok = AutoTokenizer.from_pretrained(str(folder))
    assert model.config.model_type == "llama" and model.config.hidden_size == 32
    assert model.get_input_embeddings().num_embeddings == len(tok)
    gate = json.loads((folder / "gate.json").read_text())
    assert gate["problems"] == 10 and 0 <= gate["forced_think_accuracy"] <= 1
    # A failed gate ran the one allowed extra round; the saved report is the final one.
    assert gate == report.__dict__
    prompt = tok.apply_chat_template([{"role": "user", "content": "(7+5)*3"}], tokenize=False, add_generation_prompt=True)
    batch = tok([prompt], return_tensors="pt", add_special_tokens=False)
    out = model.generate(**batch, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] <= batch["input_ids"].shape[1] + 5
    # Saved weights are the trained ones: reloading gives identical logits.
    again = AutoModelForCausalLM.from_pretrained(str(folder))
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, again(**batch).logits)


def test_second_call_reuses_the_build_and_force_rebuilds(tmp_path):
    cfg = quick(tmp_path / "tiny", steps=4)
    folder, _, first = build_tiny(cfg)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    _, _, second = build_tiny(cfg)
    assert first is not None and second is None
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    _, _, third = build_tiny(cfg.model_copy(update={"force": True}))
    assert third is not None and is_built(folder)
    assert not list(tmp_path.glob(".tiny.*"))  # no temporary or old folders left behind


def test_leftovers_of_a_killed_build_are_not_a_checkpoint_and_get_cleaned(tmp_path):
    half = tmp_path / "tiny"
    half.mkdir()
    (half / "config.json").write_text("{}")  # a build killed before gate.json was written
    stale = tmp_path / ".tiny.tmp-99999"
    stale.mkdir()
    assert not is_built(half)
    folder, _, seconds = build_tiny(quick(half, steps=4))
    assert seconds is not None and is_built(folder) and not stale.exists()


def test_two_builders_at_once_build_only_once(tmp_path):
    cfg = quick(tmp_path / "tiny", steps=4)
    results = []
    threads = [threading.Thread(target=lambda: results.append(build_tiny(cfg)[2])) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r is None for r in results) == [False, True]


def test_cache_folder_honours_env_and_names_seed_version_and_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("THINKRL_CACHE", str(tmp_path))
    default = checkpoint_dir(TinyConfig(seed=2))
    assert default.parent == tmp_path and default.name.startswith("tiny-seed2-v")
    assert checkpoint_dir(TinyConfig(seed=2, force=True)) == default
    changed = checkpoint_dir(TinyConfig(seed=2, steps=10))
    assert changed != default and changed.name.startswith(default.name + "-")


def test_run_tiny_prints_the_gate_and_the_path(tmp_path, capsys):
    folder = run_tiny(quick(tmp_path / "tiny", steps=4))
    out = capsys.readouterr().out
    assert "forced-scratchpad" in out and "greedy accuracy" in out and str(folder) in out.replace("\n", "")


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="num_heads"):
        load_config(TinyConfig, None, ["hidden_size=30", "num_heads=4"])
    with pytest.raises(ConfigError, match="stesp"):
        load_config(TinyConfig, None, ["stesp=3"])
