"""thinkrl vs TRL: GRPO steps/s, peak memory and where a step goes, on the same model,
prompts and reward.

Run: `.venv/bin/pip install "trl==1.16.*"` once, then `.venv/bin/python bench/bench_trl.py`.
Scenarios (`--scenarios`):
  a  today's character-vocabulary random Llama (2M and 24M parameters), chain prompts;
  b  a Qwen2-shaped random model with the real 151,646-token Qwen2.5 vocabulary and tied
     embeddings (most of its parameters are the embedding, as in Qwen2.5-0.5B), 8 GSM8K
     questions in ChatML; a random model almost never samples eos, so rows run to the limit;
  c  like b, with the eos logit raised inside the model so eos comes at ~2.5% per token and
     completions run from a few tokens to the limit (the spread is printed).
Both trainers get 8 prompts x 8 samples, beta=0, the same loss (token-level, TRL's "dapo"),
AdamW at a constant 3e-4 (so the policy, and with it the completion lengths, drift alike),
float32 (`--gpu`: bf16 on the GPU), no gradient checkpointing,
micro-batch 16 (TRL: 4 accumulation steps of 16), the same reward. Every run is its own
process (its peak RSS is the run's), runs alternate (thinkrl, TRL, thinkrl, TRL, ...) so
the machine's slow stretches hit both, and the first step of every run is warm-up and not
counted. The results are ratios: this machine's speed varies a lot from minute to minute.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("THINKRL_SHARED", REPO.parent / "shared"))
CHAR_SIZES = {"2M": (192, 512, 5, 4), "24M": (512, 1376, 7, 8)}  # hidden, intermediate, layers, heads
QWEN_SHAPE = (64, 256, 2, 4)  # scaled down to run here; --qwen-hidden etc. change it
PROMPTS, GENERATIONS, MICRO = 8, 8, 16
EOS_RATE = 0.025


def digit_share(text: str) -> float:
    """The shared reward: cheap, deterministic, and varied on a random model's output."""
    return sum(ch.isdigit() for ch in text) / max(len(text), 1)


# ---------------------------------------------------------------- models and prompts


def build_char_model(size: str, out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from thinkrl.tiny.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    hidden, inter, layers, heads = CHAR_SIZES[size]
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=inter,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_qwen_model(out: Path, shape: tuple[int, int, int, int], eos_rate: float | None) -> None:
    """A random Qwen2 with the real vocabulary and tied embeddings; with `eos_rate`, residual
    dimension 0 is made a constant (every embedding holds c there and no layer writes to it),
    so the final hidden state has a near-constant component that adds the same amount to every
    logit, and the eos embedding gets a larger value there: eos then comes at about `eos_rate`
    per token, from inside the model, for both trainers alike."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(SHARED / "tokenizers" / "qwen2.5-vocab")
    hidden, inter, layers, heads = shape
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=inter,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                         max_position_embeddings=1024, tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    if eos_rate:
        _raise_eos(model, tokenizer.eos_token_id, eos_rate)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _raise_eos(model, eos: int, rate: float) -> None:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    embed = model.get_input_embeddings().weight
    with torch.no_grad():
        c = float(embed.std()) * 4
        embed[:, 0] = c
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0].zero_()
            layer.mlp.down_proj.weight[0].zero_()
        probe = torch.randint(0, embed.shape[0] - 10, (8, 64), generator=torch.Generator().manual_seed(1)).to(device)
        lo, hi = 0.0, 50.0 * c
        for _ in range(24):  # bisect the eos value in dimension 0 for the mean eos probability
            mid = (lo + hi) / 2
            embed[eos, 0] = c + mid
            p = torch.softmax(model(input_ids=probe).logits.float(), dim=-1)[..., eos].mean()
            lo, hi = (mid, hi) if p < rate else (lo, mid)
    model.to("cpu")


def gsm8k_questions(count: int = PROMPTS) -> list[str]:
    lines = (SHARED / "data" / "gsm8k" / "test.jsonl").read_text().splitlines()[:count]
    return [json.loads(line)["question"] for line in lines]


def chain_questions() -> list[str]:
    from thinkrl.data.tasks import get_task

    return [f"User: {ex.prompt}. Assistant:" for ex in get_task("chain").generate(PROMPTS, seed=7)]


def rendered(questions: list[str], template: str, model_dir: Path) -> list[str]:
    """The prompt texts thinkrl samples from (TRL gets the very same strings)."""
    from transformers import AutoTokenizer

    from thinkrl.data.example import Example
    from thinkrl.data.templates import render_prompt

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return [render_prompt(Example(id=str(i), prompt=q, answer="0"), template, tokenizer) for i, q in enumerate(questions)]


# ---------------------------------------------------------------- one run (a child process)


class Clock:
    """Seconds spent inside wrapped calls, by phase, reset every step."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    def wrap(self, phase: str, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.phases[phase] = self.phases.get(phase, 0.0) + time.perf_counter() - t0
        return timed

    def take(self) -> dict[str, float]:
        out, self.phases = self.phases, {}
        return out


def run_thinkrl(model_dir: Path, questions: list[str], template: str, steps: int, new_tokens: int,
                work: Path, gpu: bool = False) -> list[dict]:
    from thinkrl.rewards import RewardResult, register
    from thinkrl.rollout.transformers_engine import TransformersEngine
    from thinkrl.train import grpo
    from thinkrl.train.config import GRPOConfig

    clock, out_steps = Clock(), []

    @register("bench_digit_share", isolate=False)
    def bench_digit_share(completion, example, **options):
        return RewardResult(digit_share(completion), "scored")

    TransformersEngine.generate = clock.wrap("generation", TransformersEngine.generate)
    grpo.sample_and_score = clock.wrap("sample_and_score", grpo.sample_and_score)
    grpo.update_policy = clock.wrap("update", grpo.update_policy)
    build = grpo.build_optimizer

    def build_optimizer(*args, **kwargs):
        optimizer, scheduler = build(*args, **kwargs)
        optimizer.step = clock.wrap("optimizer", optimizer.step)
        return optimizer, scheduler

    grpo.build_optimizer = build_optimizer
    step_metrics = grpo.step_metrics

    def record(rollout, update, gen_time_s, train_time_s, **kwargs):
        phases = clock.take()
        gen = phases.get("generation", 0.0)
        out_steps.append({"step_s": gen_time_s + train_time_s, "generation": gen,
                          "scoring": phases.get("sample_and_score", gen) - gen, "optimizer": phases.get("optimizer", 0.0),
                          "forward_backward": phases.get("update", 0.0) - phases.get("optimizer", 0.0),
                          "lengths": [len(c.completion_ids) for c in rollout.completions]})
        return step_metrics(rollout, update, gen_time_s=gen_time_s, train_time_s=train_time_s, **kwargs)

    grpo.step_metrics = record
    data = work / "prompts.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "0"}) + "\n" for q in questions))
    cfg = GRPOConfig.model_validate({
        "model": {"name": str(model_dir), "dtype": "bfloat16" if gpu else "float32"},
        "data": {"path": str(data), "template": template, "shuffle": False},
        "rollout": {"prompts_per_step": PROMPTS, "group_size": GENERATIONS, "max_new_tokens": new_tokens,
                    "temperature": 1.0, "batch_size": PROMPTS * GENERATIONS, "reward_workers": 0},
        "algo": {"beta": 0.0, "aggregation": "token"},  # TRL's default loss_type "dapo"
        "optim": {"micro_batch_size": MICRO},
        "rewards": [{"name": "bench_digit_share"}],
        "run": {"output_dir": str(work / "thinkrl-run"), "steps": steps, "save_every": 0, "plot": False,
                "sample_every": 1000},
    })
    grpo.train_grpo(cfg)
    return out_steps


def run_trl(model_dir: Path, questions: list[str], template: str, steps: int, new_tokens: int,
            work: Path, gpu: bool = False) -> list[dict]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    clock, out_steps = Clock(), []
    model.generate = clock.wrap("generation", model.generate)
    lengths: list[int] = []

    def reward(completions, completion_ids=None, **kwargs):
        t0 = time.perf_counter()
        lengths.extend(len(ids) for ids in completion_ids or [])
        scores = [digit_share(c if isinstance(c, str) else c[0]["content"]) for c in completions]
        clock.phases["scoring"] = clock.phases.get("scoring", 0.0) + time.perf_counter() - t0
        return scores

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self.t_opt = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kwargs):
            clock.phases["optimizer"] = clock.phases.get("optimizer", 0.0) + time.perf_counter() - self.t_opt

        def on_step_end(self, args, state, control, **kwargs):
            seconds, phases = time.perf_counter() - self.t0, clock.take()
            gen, scoring, opt = phases.get("generation", 0.0), phases.get("scoring", 0.0), phases.get("optimizer", 0.0)
            out_steps.append({"step_s": seconds, "generation": gen, "scoring": scoring, "optimizer": opt,
                              "forward_backward": seconds - gen - scoring - opt, "lengths": list(lengths)})
            lengths.clear()

    args = TRLConfig(output_dir=str(work / "trl-run"), use_cpu=not gpu, bf16=gpu, fp16=False,
                     gradient_checkpointing=False, beta=0.0, num_generations=GENERATIONS,
                     per_device_train_batch_size=MICRO, gradient_accumulation_steps=PROMPTS * GENERATIONS // MICRO,
                     max_completion_length=new_tokens, temperature=1.0, learning_rate=3e-4, lr_scheduler_type="constant", max_steps=steps,
                     logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, seed=0)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args,
                          train_dataset=Dataset.from_list([{"prompt": p} for p in rendered(questions, template, model_dir)]),
                          processing_class=tokenizer, callbacks=[StepTimer()])
    trainer.train()
    return out_steps


def child(args: argparse.Namespace) -> None:
    import logging

    import torch

    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    model_dir = Path(args.model)
    questions, template = (chain_questions(), "plain") if args.scenario == "a" else (gsm8k_questions(), "chat")
    with tempfile.TemporaryDirectory() as tmp:
        run = run_thinkrl if args.child == "thinkrl" else run_trl
        steps = run(model_dir, questions, template, args.steps, args.new_tokens, Path(tmp), gpu=args.gpu)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if args.gpu:  # the memory that matters there is the GPU's
        peak_gib = torch.cuda.max_memory_allocated() / 2**30
    print("RESULT " + json.dumps({"steps": steps[1:], "peak_gib": peak_gib}))


# ---------------------------------------------------------------- the comparison


def run_child(trainer: str, scenario: str, model: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", trainer, "--scenario", scenario, "--model", str(model),
               "--steps", str(args.steps), "--threads", str(args.threads), "--new-tokens", str(args.new_tokens),
               *(["--gpu"] if args.gpu else [])]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{trainer} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def summarise(runs: list[dict]) -> dict:
    steps = [s for run in runs for s in run["steps"]]
    step_s = statistics.median(s["step_s"] for s in steps)
    shares = {k: statistics.median(s[k] for s in steps) / step_s
              for k in ("generation", "scoring", "forward_backward", "optimizer")}
    lengths = sorted(n for s in steps for n in s["lengths"])
    return {"step_s": step_s, "shares": shares, "peak_gib": max(r["peak_gib"] for r in runs), "lengths": lengths}


def compare(scenario: str, label: str, model: Path, args: argparse.Namespace) -> None:
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(run_child("thinkrl", scenario, model, args))
        theirs.append(run_child("trl", scenario, model, args))
    a, b = summarise(ours), summarise(theirs)
    print(f"\n[{label}, {args.threads} thread(s), {sum(len(r['steps']) for r in ours)} timed steps each]")
    for name, s in (("thinkrl", a), ("TRL", b)):
        shares = ", ".join(f"{k} {v:.0%}" for k, v in s["shares"].items())
        n = s["lengths"]
        spread = f"lengths min {n[0]} median {n[len(n) // 2]} mean {sum(n) / len(n):.1f} max {n[-1]}" if n else ""
        memory = "peak GPU memory" if args.gpu else "peak RSS"
        print(f"  {name:8s}: {s['step_s']:.2f} s/step, {memory} {s['peak_gib']:.2f} GiB; {shares}; {spread}")
    print(f"  ratio   : steps/s thinkrl/TRL = {b['step_s'] / a['step_s']:.2f}x, "
          f"peak memory thinkrl/TRL = {a['peak_gib'] / b['peak_gib']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"])
    parser.add_argument("--sizes", nargs="+", default=list(CHAR_SIZES), choices=list(CHAR_SIZES), help="scenario a")
    parser.add_argument("--qwen-shape", type=int, nargs=4, default=list(QWEN_SHAPE),
                        metavar=("HIDDEN", "INTERMEDIATE", "LAYERS", "HEADS"), help="scenarios b and c")
    parser.add_argument("--rounds", type=int, default=2, help="alternating thinkrl/TRL run pairs")
    parser.add_argument("--steps", type=int, default=3, help="steps per run (the first is warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=128, help="completion limit (scenario a: 64)")
    parser.add_argument("--gpu", action="store_true", help="on the GPU, bf16 (peak memory: the GPU's)")
    parser.add_argument("--child", choices=["thinkrl", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in args.scenarios:
            if scenario == "a":
                for size in args.sizes:
                    model = Path(tmp) / f"char-{size}"
                    build_char_model(size, model)
                    compare("a", f"a: char vocabulary, {size}", model, argparse.Namespace(**{**vars(args), "new_tokens": 64}))
                continue
            model = Path(tmp) / f"qwen-{scenario}"
            build_qwen_model(model, tuple(args.qwen_shape), EOS_RATE if scenario == "c" else None)
            label = {"b": "b: Qwen2.5 vocabulary, rows to the limit", "c": "c: Qwen2.5 vocabulary, eos ~2.5%/token"}[scenario]
            compare(scenario, f"{label}, {tuple(args.qwen_shape)}", model, args)


if __name__ == "__main__":
    main()
