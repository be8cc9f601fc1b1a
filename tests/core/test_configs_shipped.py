"""Every config thinkrl ships loads: the GRPO YAMLs validate against GRPOConfig, and the
accelerate launch configs load with accelerate's own config classes and resolve into the
environment `accelerate launch` would hand each process."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from thinkrl.config import load_config
from thinkrl.train.config import GRPOConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# pipeline files (a `stages:` list) are checked stage by stage in tests/pipeline
GRPO_YAMLS = sorted(p for p in CONFIGS.glob("*.yaml") if "stages" not in (yaml.safe_load(p.read_text()) or {}))
ACCELERATE_YAMLS = sorted((CONFIGS / "accelerate").glob("*.yaml"))


def test_the_shipped_configs_are_there():
    names = {p.name for p in GRPO_YAMLS}
    assert {"r1-zero-qwen2.5-math-1.5b.yaml", "r1-zero-qwen2.5-math-7b.yaml"} <= names
    assert {p.name for p in ACCELERATE_YAMLS} == {"ddp.yaml", "fsdp.yaml", "deepspeed-zero2.yaml",
                                                  "deepspeed-zero3.yaml", "multi-node.yaml"}


@pytest.mark.parametrize("path", GRPO_YAMLS, ids=lambda p: p.name)
def test_grpo_yaml_validates(path):
    cfg = load_config(GRPOConfig, path)
    assert cfg.rollout.group_size >= 2 and cfg.model.name


@pytest.mark.parametrize("name, lr", [("r1-zero-qwen2.5-math-1.5b.yaml", 1e-6), ("r1-zero-qwen2.5-math-7b.yaml", 3e-6)])
def test_r1_zero_configs_hold_the_papers_settings(name, lr):
    cfg = load_config(GRPOConfig, CONFIGS / name)
    assert cfg.data.template == "r1_zero"
    assert cfg.rollout.group_size == 16 and cfg.rollout.temperature == 1.0
    assert cfg.algo.beta == 0.001 and cfg.optim.lr == lr
    assert [t.name for t in cfg.rewards] == ["accuracy", "format_r1_zero"]
    assert cfg.model.dtype == "bfloat16" and cfg.model.gradient_checkpointing
    assert cfg.rollout.engine == "vllm" and cfg.rollout.vllm.mode == "colocate"
    # Qwen2.5-Math's context is 4096 tokens: prompt room must remain.
    assert cfg.rollout.max_new_tokens + 512 <= cfg.rollout.vllm.max_model_len <= 4096


def _launch_args(path: Path):
    """What `accelerate launch --config_file PATH` resolves before starting processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "thinkrl.cli", "zero"])
    return _validate_launch_command(args)


@pytest.mark.parametrize("path", ACCELERATE_YAMLS, ids=lambda p: p.name)
def test_accelerate_config_loads_and_resolves(path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    config = load_config_from_file(str(path))  # raises on keys accelerate does not know
    assert isinstance(config, ClusterConfig)
    assert config.mixed_precision == "bf16" and config.num_processes >= 2
    known = set(vars(launch_command_parser().parse_args(["x.py"])))
    for section in ("fsdp_config", "deepspeed_config"):
        for key in getattr(config, section):  # accelerate copies these onto launch arguments
            assert key in known or f"fsdp_{key}" in known, f"{path.name}: {section}.{key} is not an accelerate setting"
    args, _defaults, _ = _launch_args(path)
    assert args.num_processes == config.num_processes


def test_fsdp_is_fsdp2_sharded_by_the_models_own_decoder_layers():
    """thinkrl trains with FSDP2 only (check_launch refuses version 1); no layer class is named,
    so accelerate wraps each of the model's `_no_split_modules` and the file serves any model.
    tests/train/test_train_grpo_ddp.py launches this very file."""
    from accelerate.utils.launch import prepare_multi_gpu_env

    env = prepare_multi_gpu_env(_launch_args(CONFIGS / "accelerate" / "fsdp.yaml")[0])
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_RESHARD_AFTER_FORWARD"].lower() == "true"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert "FSDP_TRANSFORMER_CLS_TO_WRAP" not in env
    import transformers.models.qwen2.modeling_qwen2 as qwen2

    assert qwen2.Qwen2ForCausalLM._no_split_modules == ["Qwen2DecoderLayer"]


@pytest.mark.parametrize("name, stage, machines", [("deepspeed-zero2.yaml", "2", 1), ("deepspeed-zero3.yaml", "3", 1)])
def test_deepspeed_configs_resolve_to_their_zero_stage(name, stage, machines):
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args, defaults, mp_from_config = _launch_args(CONFIGS / "accelerate" / name)
    assert args.use_deepspeed and args.num_machines == machines
    # As `accelerate launch` does before handing over to DeepSpeed:
    fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    _, env = prepare_deepspeed_cmd_env(args)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == stage
    if stage == "3":
        assert env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"


def test_multi_node_rendezvous():
    config = yaml.safe_load((CONFIGS / "accelerate" / "multi-node.yaml").read_text())
    assert config["num_machines"] == 2 and config["rdzv_backend"] == "c10d"
    assert config["main_process_ip"] and config["main_process_port"] and config["machine_rank"] == 0
    assert config["num_processes"] % config["num_machines"] == 0
    args = _launch_args(CONFIGS / "accelerate" / "multi-node.yaml")[0]
    assert args.multi_gpu and not args.use_deepspeed and not args.use_fsdp  # DDP: what thinkrl checkpoints today
