"""Checkpoint/resume on a tiny random Llama: exact continuation, RNG continuity, crash safety
(real SIGKILLs in a subprocess), pruning, LoRA adapters."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from thinkrl.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

VOCAB = 96


def tiny_llama(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def trainer(model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 3) * 0.9 ** s)
    return optimizer, scheduler


def train_step(model, optimizer, scheduler) -> None:
    """One update on a batch drawn from the global torch RNG, so resuming must restore it."""
    ids = torch.randint(VOCAB, (2, 8))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture()
def tokenizer(qwen_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen_tokenizer_dir)


def test_resume_continues_bit_identically(tmp_path, tokenizer):
    model = tiny_llama(seed=0)
    optimizer, scheduler = trainer(model)
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(6)
    for _ in range(3):
        train_step(model, optimizer, scheduler)
    ckpt = save_checkpoint(tmp_path, 3, model, tokenizer, optimizer, scheduler,
                           extra_state={"prompts_seen": 48, "note": "x"})
    draws = (random.random(), float(np.random.rand()))
    for _ in range(2):
        train_step(model, optimizer, scheduler)
    uninterrupted, lr = weights(model), scheduler.get_last_lr()

    # A new process would start from a different init and different RNG streams.
    resumed = tiny_llama(seed=99)
    optimizer2, scheduler2 = trainer(resumed)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    assert latest_checkpoint(tmp_path) == ckpt
    state = load_checkpoint(ckpt, resumed, optimizer2, scheduler2)
    assert state == {"step": 3, "adapter": False, "prompts_seen": 48, "note": "x"}
    assert (random.random(), float(np.random.rand())) == draws
    for _ in range(2):
        train_step(resumed, optimizer2, scheduler2)
    after = weights(resumed)
    assert after.keys() == uninterrupted.keys()
    for key in after:
        assert torch.equal(after[key], uninterrupted[key]), key
    assert scheduler2.get_last_lr() == lr


def test_checkpoint_is_an_ordinary_hugging_face_folder(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = tiny_llama(seed=1)
    optimizer, scheduler = trainer(model)
    ckpt = save_checkpoint(tmp_path, 7, model, tokenizer, optimizer, scheduler)
    assert ckpt == tmp_path / "checkpoints" / "step-000007"
    assert (ckpt / "model.safetensors").is_file()
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pt", "trainer_state.json"} <= {p.name for p in ckpt.iterdir()}
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-000007"
    loaded = AutoModelForCausalLM.from_pretrained(ckpt)
    ids = torch.randint(VOCAB, (1, 6))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert AutoTokenizer.from_pretrained(ckpt)("2+2=4").input_ids == tokenizer("2+2=4").input_ids


def test_keep_last_prunes_older_checkpoints_after_the_new_one_is_complete(tmp_path):
    model = tiny_llama(seed=2)
    optimizer, scheduler = trainer(model)
    root = tmp_path / "checkpoints"
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, model, None, optimizer, scheduler, keep_last=2)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000030", "step-000040"]
    assert latest_checkpoint(tmp_path) == root / "step-000040"
    save_checkpoint(tmp_path, 50, model, None, optimizer, scheduler, keep_last=1)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000050"]


def test_no_checkpoint_means_none(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints" / ".tmp-step-000001-1").mkdir(parents=True)
    assert latest_checkpoint(tmp_path) is None


def test_an_error_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = tiny_llama(seed=3)
    optimizer, scheduler = trainer(model)
    first = save_checkpoint(tmp_path, 1, model, None, optimizer, scheduler)
    before = weights(model)
    train_step(model, optimizer, scheduler)

    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        if str(f).endswith("scheduler.pt"):  # model and optimizer are already written by now
            raise OSError("disk full")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, model, None, optimizer, scheduler)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == first
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step-000001"]
    fresh = tiny_llama(seed=4)
    assert load_checkpoint(first, fresh, *trainer(fresh))["step"] == 1
    for key, value in weights(fresh).items():
        assert torch.equal(value, before[key])


CRASHING_SAVE = textwrap.dedent("""
    import os, signal, sys
    import torch
    sys.path.insert(0, {tests_dir!r})
    from test_train_checkpoint import tiny_llama, train_step, trainer
    import thinkrl.train.checkpoint as checkpoint

    run_dir, phase = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    model = tiny_llama(seed=5)
    optimizer, scheduler = trainer(model)
    checkpoint.save_checkpoint(run_dir, 1, model, None, optimizer, scheduler)
    train_step(model, optimizer, scheduler)

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if phase == "writing":  # the temp folder holds the weights and the optimiser, nothing else
        real_save = torch.save
        def save(obj, f, *a, **k):
            if str(f).endswith("scheduler.pt"):
                die()
            return real_save(obj, f, *a, **k)
        torch.save = save
    elif phase == "renamed":  # the new folder is in place, the pointer not yet moved
        checkpoint._point_latest = die
    elif phase == "pointer":  # the new pointer is written to its temp file, not yet replaced
        real_replace = os.replace
        def replace(src, dst, *a, **k):
            if str(dst).endswith("latest"):
                die()
            return real_replace(src, dst, *a, **k)
        checkpoint.os.replace = replace
    checkpoint.save_checkpoint(run_dir, 2, model, None, optimizer, scheduler)
""")


@pytest.mark.parametrize("phase", ["writing", "renamed", "pointer"])
def test_sigkill_during_save_never_loses_the_previous_checkpoint(tmp_path, phase):
    script = tmp_path / "crash.py"
    script.write_text(CRASHING_SAVE.format(tests_dir=str(Path(__file__).parent)))
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(run_dir), phase], check=False, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    root = run_dir / "checkpoints"
    leftovers = sorted(p.name for p in root.iterdir())
    if phase == "writing":
        assert any(name.startswith(".tmp-step-000002") for name in leftovers), leftovers
    if phase == "pointer":
        assert any(name.startswith(".tmp-latest") for name in leftovers), leftovers

    found = latest_checkpoint(run_dir)
    assert found == root / "step-000001"
    model = tiny_llama(seed=6)
    assert load_checkpoint(found, model, *trainer(model))["step"] == 1

    # The resumed run saves step 2 again: it replaces any half-published folder and sweeps debris.
    optimizer, scheduler = trainer(model)
    save_checkpoint(run_dir, 2, model, None, optimizer, scheduler)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000001", "step-000002"]
    assert latest_checkpoint(run_dir) == root / "step-000002"


def test_resuming_from_an_earlier_step_drops_the_abandoned_later_ones(tmp_path):
    model = tiny_llama(seed=7)
    optimizer, scheduler = trainer(model)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, None, optimizer, scheduler, keep_last=3)
    (tmp_path / "checkpoints" / "latest").write_text("step-000001\n")  # as if 2 and 3 were never pointed to
    save_checkpoint(tmp_path, 2, model, None, optimizer, scheduler, keep_last=3)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step-000001", "step-000002"]


def test_lora_checkpoint_holds_the_adapter_and_restores_it(tmp_path):
    from peft import LoraConfig, get_peft_model

    def lora_model():
        return get_peft_model(tiny_llama(seed=8), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                             task_type="CAUSAL_LM"))

    model = lora_model()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    train_step(model, optimizer, scheduler)  # moves lora_B off zero
    ckpt = save_checkpoint(tmp_path, 1, model, None, optimizer, scheduler)
    assert (ckpt / "adapter_model.safetensors").is_file() and (ckpt / "adapter_config.json").is_file()
    assert not (ckpt / "model.safetensors").exists()
    assert json.loads((ckpt / "trainer_state.json").read_text())["adapter"] is True

    fresh = lora_model()
    optimizer2 = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=1e-2)
    scheduler2 = torch.optim.lr_scheduler.LambdaLR(optimizer2, lambda s: 1.0)
    load_checkpoint(ckpt, fresh, optimizer2, scheduler2)
    trained = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert trained and all(torch.equal(fresh.state_dict()[k], v) for k, v in trained.items())
    with pytest.raises(ValueError, match="not a peft model"):
        load_checkpoint(ckpt, tiny_llama(seed=8))
