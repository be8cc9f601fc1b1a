"""Dry run: exact parameter counts from config.json alone, and memory estimates that move
the way a user expects when they change GPUs, ZeRO stage, checkpointing or LoRA."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from rich.console import Console

from thinkrl.errors import ModelNotFoundError
from thinkrl.train.dry_run import (
    ARCHITECTURES,
    GIB,
    dry_run,
    dry_run_for_grpo,
    estimate_memory,
    print_dry_run,
)

MATH_15B = "Qwen/Qwen2.5-Math-1.5B"


def qwen2_params_by_hand(cfg: dict) -> int:
    """Qwen2 decoder: biased q/k/v, unbiased o, SwiGLU MLP, two RMSNorms a layer, a final norm."""
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    head_dim = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * head_dim
    per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * inter + 2 * h
    embeddings = cfg["vocab_size"] * h * (1 if cfg["tie_word_embeddings"] else 2)
    return embeddings + layers * per_layer + h


@pytest.fixture(scope="module")
def base_report(qwen_tokenizer_dir):
    return dry_run(MATH_15B, str(qwen_tokenizer_dir), micro_batch_size=4, seq_len=2048, num_gpus=1,
                   zero_stage=0, reference_model=True, vllm_memory_fraction=0.3)


def test_math_1_5b_counts_its_parameters_exactly(base_report, qwen_tokenizer_dir):
    cfg = json.loads((ARCHITECTURES / "Qwen--Qwen2.5-Math-1.5B.json").read_text())
    assert qwen2_params_by_hand(cfg) == 1_543_714_304  # the published 1.54B
    assert base_report.total_params == 1_543_714_304
    assert base_report.trainable_params == base_report.total_params
    assert base_report.config_source.startswith("bundled")
    # The real Qwen tokenizer fits inside the padded embedding: no warning about it.
    from transformers import AutoTokenizer

    assert base_report.tokenizer_vocab == len(AutoTokenizer.from_pretrained(qwen_tokenizer_dir))
    assert base_report.tokenizer_vocab <= base_report.shape.vocab_rows == 151936
    assert not [w for w in base_report.warnings if "embedding" in w]


def test_math_7b_counts_untied_head(qwen_tokenizer_dir):
    cfg = json.loads((ARCHITECTURES / "Qwen--Qwen2.5-Math-7B.json").read_text())
    report = dry_run("Qwen/Qwen2.5-Math-7B", str(qwen_tokenizer_dir))
    assert report.total_params == qwen2_params_by_hand(cfg) == 7_615_616_512


def test_bf16_training_holds_fp32_weights_grads_and_moments_and_a_bf16_reference(base_report):
    """What thinkrl allocates: trained weights are fp32 under bf16 autocast (16 bytes per
    trainable parameter in all), the frozen reference and vLLM's copy are bf16."""
    n, mem = base_report.total_params, base_report.memory
    assert base_report.run.dtype == "bfloat16"
    assert (mem.weights, mem.gradients, mem.optimizer, mem.reference) == (4 * n, 4 * n, 8 * n, 2 * n)


def test_zero3_on_eight_gpus_needs_less_than_one_gpu_unsharded(base_report, qwen_tokenizer_dir):
    sharded = dry_run(MATH_15B, str(qwen_tokenizer_dir), micro_batch_size=4, seq_len=2048, num_gpus=8,
                      zero_stage=3, reference_model=True, vllm_memory_fraction=0.3)
    one, eight = base_report.memory, sharded.memory
    assert eight.training_total < one.training_total and eight.peak < one.peak
    # Sharded by 8: weights, gradients and optimizer states; not activations or logits.
    assert eight.optimizer == pytest.approx(one.optimizer / 8, rel=1e-6)
    assert eight.weights == pytest.approx(one.weights / 8, rel=1e-6)
    assert eight.activations == one.activations and eight.logits == one.logits
    # ZeRO-2 sits in between: optimizer and gradients sharded, weights whole.
    zero2 = estimate_memory(base_report.shape, replace(base_report.run, num_gpus=8, zero_stage=2))
    assert eight.training_total < zero2.training_total < one.training_total
    assert zero2.weights == one.weights


def test_checkpointing_lowers_activations(base_report):
    without = estimate_memory(base_report.shape, replace(base_report.run, gradient_checkpointing=False))
    assert base_report.memory.activations < without.activations / 5
    assert base_report.memory.training_total < without.training_total


def test_longer_sequences_and_bigger_micro_batches_cost_more(base_report):
    run = base_report.run
    longer = estimate_memory(base_report.shape, replace(run, seq_len=2 * run.seq_len))
    assert longer.activations == 2 * base_report.memory.activations
    assert longer.logits == 2 * base_report.memory.logits == 2 * 4 * 2048 * 151936 * 4


def test_lora_lowers_optimizer_memory_and_drops_the_reference_copy(base_report, qwen_tokenizer_dir):
    lora = dry_run(MATH_15B, str(qwen_tokenizer_dir), lora_r=16, micro_batch_size=4, seq_len=2048,
                   reference_model=True, vllm_memory_fraction=0.3)
    # LoRA r=16 on every linear of the 28 layers: r * (in + out) per projection.
    h, inter, kv = 1536, 8960, 256
    per_layer = 16 * ((h + h) + 2 * (h + kv) + (h + h) + 3 * (h + inter))
    assert lora.trainable_params == 28 * per_layer == 18_464_768
    assert lora.total_params == base_report.total_params + lora.trainable_params
    assert lora.memory.optimizer < base_report.memory.optimizer / 50
    assert lora.memory.gradients < base_report.memory.gradients / 50
    assert lora.memory.reference == 0 < base_report.memory.reference


def test_vllm_share_and_kv_capacity(base_report):
    mem, run = base_report.memory, base_report.run
    assert mem.vllm == int(0.3 * 80 * GIB)
    # 28 layers x 2 (k, v) x 2 kv heads x 128 dims x 2 bytes per token.
    assert mem.kv_bytes_per_token == 28 * 2 * 256 * 2
    assert mem.vllm_kv_capacity == mem.vllm - run.total_params * 2
    # Asleep while training: vLLM's share only counts in the generation phase.
    assert mem.generation_total > mem.vllm > 0
    awake = estimate_memory(base_report.shape, replace(run, vllm_sleep=False))
    assert awake.training_total == mem.training_total + mem.vllm


def test_tiny_checkpoint_counts_what_loading_it_holds(tiny_random_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = dry_run(str(tiny_random_model), micro_batch_size=2, seq_len=64)
    loaded = AutoModelForCausalLM.from_pretrained(tiny_random_model)
    assert report.total_params == sum(p.numel() for p in loaded.parameters())
    assert report.config_source.startswith("local folder")
    assert report.tokenizer_vocab == len(AutoTokenizer.from_pretrained(tiny_random_model))
    assert report.fits


def test_tokenizer_larger_than_embedding_warns(tiny_random_model, qwen_tokenizer_dir):
    report = dry_run(str(tiny_random_model), str(qwen_tokenizer_dir), seq_len=64)
    assert any("embedding only" in w for w in report.warnings)


def test_unknown_model_is_one_line_error():
    with pytest.raises(ModelNotFoundError) as err:
        dry_run("nobody-here/no-such-model-2024")
    message = str(err.value)
    assert "\n" not in message and "nobody-here/no-such-model-2024" in message
    assert "Qwen/Qwen2.5-Math-7B" in message  # says which names work without a download


def test_grpo_config_maps_onto_a_dry_run(tiny_random_model):
    from thinkrl.train.config import GRPOConfig

    cfg = GRPOConfig.model_validate({"model": {"name": str(tiny_random_model), "gradient_checkpointing": True},
                                     "rollout": {"prompts_per_step": 4, "group_size": 8, "max_new_tokens": 100},
                                     "algo": {"beta": 0.001}, "optim": {"micro_batch_size": 4}})
    report = dry_run_for_grpo(cfg, num_gpus=2, zero_stage=3, prompt_tokens=28)
    assert report.run.seq_len == 128 and report.run.rollout_samples == 32
    assert report.run.micro_batch_size == 4 and report.run.reference_model
    assert report.run.num_gpus == 2 and report.run.zero_stage == 3 and report.run.dtype == "float32"


def test_print_shows_every_term_and_the_verdict(base_report):
    console = Console(record=True, width=120)
    print_dry_run(base_report, console)
    text = console.export_text()
    for term in ("weights", "gradients", "optimizer", "activations", "logits", "reference model", "vLLM share"):
        assert term in text
    assert "1,543,714,304" in text and "fits" in text
