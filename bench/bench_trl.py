"""thinkrl vs TRL: GRPO step time and generation speed on the same model, prompts and reward.

Run: `.venv/bin/pip install "trl==1.16.*"` once, then `.venv/bin/python bench/bench_trl.py`.
Both trainers get the same random Llama (two sizes), the same 8 prompts x 8 generations,
64 new tokens, beta=0, float32, no gradient checkpointing, and the same reward function.
Runs alternate (thinkrl, TRL, thinkrl, TRL, ...) so the machine's slow stretches hit both;
the first step of every run is warm-up and is not counted. The result is a ratio, never an
absolute figure: this machine's speed varies 10x from minute to minute.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

SIZES = {  # name -> (hidden, intermediate, layers, heads)
    "2M": (192, 512, 5, 4),
    "24M": (512, 1376, 7, 8),
}
PROMPTS, GENERATIONS, NEW_TOKENS = 8, 8, 64


def digit_share(text: str) -> float:
    """The shared reward: cheap, deterministic, and varied on a random model's output."""
    return sum(ch.isdigit() for ch in text) / max(len(text), 1)


def build_model(size: str, out: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from thinkrl.tiny.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    hidden, inter, layers, heads = SIZES[size]
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=inter,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    print(f"model {size}: {params / 1e6:.1f}M parameters -> {out}")
    return out


def prompts() -> list[str]:
    from thinkrl.data.tasks import get_task

    return [f"User: {ex.prompt}. Assistant:" for ex in get_task("chain").generate(PROMPTS, seed=7)]


def run_thinkrl(model_dir: Path, steps: int, work: Path) -> list[dict]:
    """Per-step timings from thinkrl's own metrics.jsonl (generation + scoring + update)."""
    from thinkrl.rewards import RewardResult, register
    from thinkrl.train.config import GRPOConfig
    from thinkrl.train.grpo import train_grpo
    from thinkrl.train.tracking import read_metrics

    @register("bench_digit_share", isolate=False)
    def bench_digit_share(completion, example, **options):
        return RewardResult(digit_share(completion), "scored")

    out = Path(tempfile.mkdtemp(dir=work))
    cfg = GRPOConfig.model_validate({
        "model": {"name": str(model_dir)},
        "data": {"path": "task:chain", "task_size": PROMPTS, "task_seed": 7, "template": "r1_zero_short"},
        "rollout": {"prompts_per_step": PROMPTS, "group_size": GENERATIONS, "max_new_tokens": NEW_TOKENS,
                    "temperature": 1.0, "batch_size": PROMPTS * GENERATIONS},
        "algo": {"beta": 0.0},
        "optim": {"micro_batch_size": PROMPTS * GENERATIONS},
        "rewards": [{"name": "bench_digit_share"}],
        "run": {"output_dir": str(out), "steps": steps, "save_every": 0, "plot": False, "sample_every": 1000},
    })
    train_grpo(cfg)
    rows = read_metrics(out / "metrics.jsonl")
    return [{"step_s": r["time/generation_s"] + r["time/train_s"], "gen_s": r["time/generation_s"],
             "tokens": r["tokens_per_s"] * r["time/generation_s"]} for r in rows[1:]]


def run_trl(model_dir: Path, steps: int, work: Path) -> list[dict]:
    """Per-step timings from a TrainerCallback; generation time from wrapping `model.generate`."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    timing = {"gen_s": 0.0, "tokens": 0}
    generate = model.generate

    def timed_generate(*args, **kwargs):
        t0 = time.perf_counter()
        out = generate(*args, **kwargs)
        timing["gen_s"] += time.perf_counter() - t0
        return out

    model.generate = timed_generate

    def reward(completions, **kwargs):
        timing["tokens"] += sum(len(tokenizer(c)["input_ids"]) for c in completions)
        return [digit_share(c) for c in completions]

    steps_out: list[dict] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()
            timing["gen_s"], timing["tokens"] = 0.0, 0

        def on_step_end(self, args, state, control, **kwargs):
            steps_out.append({"step_s": time.perf_counter() - self.t0, "gen_s": timing["gen_s"],
                              "tokens": timing["tokens"]})

    args = TRLConfig(output_dir=str(Path(tempfile.mkdtemp(dir=work))), use_cpu=True, bf16=False, fp16=False,
                     gradient_checkpointing=False, beta=0.0, num_generations=GENERATIONS,
                     per_device_train_batch_size=PROMPTS * GENERATIONS, gradient_accumulation_steps=1,
                     max_completion_length=NEW_TOKENS, temperature=1.0, learning_rate=3e-4, max_steps=steps,
                     logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, seed=0)
    data = Dataset.from_list([{"prompt": p} for p in prompts()])
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data,
                          processing_class=tokenizer, callbacks=[StepTimer()])
    trainer.train()
    return steps_out[1:]


def summarise(rows: list[dict]) -> dict:
    step = statistics.median(r["step_s"] for r in rows)
    gen = statistics.median(r["gen_s"] for r in rows)
    tokens_per_s = statistics.median(r["tokens"] / r["gen_s"] for r in rows if r["gen_s"] > 0) if any(
        r["gen_s"] > 0 for r in rows) else float("nan")
    return {"step_s": step, "gen_share": gen / step, "tokens_per_s": tokens_per_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--rounds", type=int, default=2, help="alternating thinkrl/TRL run pairs per size")
    parser.add_argument("--steps", type=int, default=4, help="steps per run (the first is warm-up)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to measure")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    for threads in args.threads:
        torch.set_num_threads(threads)
        for size in args.sizes:
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                model_dir = build_model(size, work / "model")
                ours, theirs = [], []
                for _ in range(args.rounds):
                    ours += run_thinkrl(model_dir, args.steps, work)
                    theirs += run_trl(model_dir, args.steps, work)
                a, b = summarise(ours), summarise(theirs)
                print(f"\n[{size}, {threads} thread(s), {len(ours)} timed steps each]")
                print(f"  thinkrl: {a['step_s']:.2f} s/step, {a['gen_share']:.0%} in generation, {a['tokens_per_s']:.0f} gen tokens/s")
                print(f"  TRL    : {b['step_s']:.2f} s/step, {b['gen_share']:.0%} in generation, {b['tokens_per_s']:.0f} gen tokens/s")
                print(f"  ratio  : steps/s thinkrl/TRL = {b['step_s'] / a['step_s']:.2f}x, "
                      f"generation tokens/s thinkrl/TRL = {a['tokens_per_s'] / b['tokens_per_s']:.2f}x "
                      "(both sample until the longest row ends, so longer samples raise tokens/s)")


if __name__ == "__main__":
    main()
