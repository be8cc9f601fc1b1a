"""Rollout generation: thinkrl's decoding loop (rollout/decode.py) vs `model.generate`,
tokens/s on the same model and prompts, and where a decode step goes.

Run: `.venv/bin/python bench/bench_generate.py` (add `--profile` for the step breakdown).
The model is a Qwen2-shaped random model with the real 151,646-token Qwen2.5 vocabulary and
tied embeddings, small enough that the LM head dominates as in real small models. A random
model almost never samples eos, so the eos logit is raised inside the model (not in the
sampler; both decoders get the same model): residual dimension 0 is made a constant (every
embedding holds c there and no layer writes to it), so the final hidden state has a
near-constant component that adds the same amount to every logit, and the eos embedding gets
a larger value there, bisected until eos comes at about --eos-rate per token. Completions
then run from one token to the limit, as real ones do.

Prompts: the first 8 GSM8K test questions in ChatML (the tokenizer's chat template), 8
samples each, one batch of 64, temperature 1. Runs alternate (new, old, new, old, ...) with
the same seeds so the machine's slow stretches hit both; read the ratio, not the times.
Tokens are the kept completion tokens (through eos), the same count for both decoders.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("THINKRL_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from bench_trl import build_qwen_model, gsm8k_questions, rendered


def build_model(shape: tuple[int, int, int, int], eos_rate: float, folder: Path):
    """bench_trl's Qwen2 model (the same eos trick), loaded for sampling."""
    from thinkrl.models import load_model, load_tokenizer

    build_qwen_model(folder, shape, eos_rate or None)
    return load_model(str(folder)).eval(), load_tokenizer(str(folder))


class Profile:
    """Seconds inside the parts of a generate call, via hooks and wrappers on the live objects."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.decode_steps = 0
        self.in_prefill = False
        self.undo: list = []

    def add(self, part: str, seconds: float) -> None:
        self.seconds[part] = self.seconds.get(part, 0.0) + seconds

    def wrap(self, owner, name: str, part: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(part, time.perf_counter() - t0)

        setattr(owner, name, timed)
        self.undo.append(lambda: setattr(owner, name, original))

    def time_forward(self, model) -> None:
        """The model's forward (prefill apart: the call with more than one position) and its LM head."""
        started: list[float] = []

        def pre(module, args, kwargs):
            self.in_prefill = kwargs["input_ids"].shape[1] > 1
            self.decode_steps += not self.in_prefill
            started.append(time.perf_counter())

        def post(module, args, kwargs, output):
            self.add("prefill" if self.in_prefill else "forward", time.perf_counter() - started.pop())

        def head_pre(module, args):
            started.append(time.perf_counter())

        def head_post(module, args, output):
            self.add("lm_head prefill" if self.in_prefill else "lm_head", time.perf_counter() - started.pop())

        self.undo.append(model.register_forward_pre_hook(pre, with_kwargs=True).remove)
        self.undo.append(model.register_forward_hook(post, with_kwargs=True).remove)
        self.undo.append(model.lm_head.register_forward_pre_hook(head_pre).remove)
        self.undo.append(model.lm_head.register_forward_hook(head_post).remove)

    def restore(self) -> None:
        for undo in reversed(self.undo):
            undo()


def profile(model, tokenizer, texts: list[str], params, decoder: str) -> None:
    """One hooked run: where the time of a decode step goes."""
    import torch
    from transformers import DynamicCache

    import thinkrl.rollout.decode as decode_module
    from thinkrl.rollout.transformers_engine import TransformersEngine

    prof = Profile()
    prof.time_forward(model)
    if decoder == "thinkrl":
        prof.wrap(decode_module, "sample_tokens", "sampler (inverse CDF)")
        prof.wrap(DynamicCache, "batch_select_indices", "cache compaction")
    else:
        prof.wrap(torch.nn.functional, "softmax", "sampler: softmax")
        prof.wrap(torch, "multinomial", "sampler: multinomial")
    engine = TransformersEngine(model, tokenizer, batch_size=len(texts) * params.n, decoder=decoder)
    t0 = time.perf_counter()
    try:
        outs = engine.generate(texts, params)
    finally:
        prof.restore()
    total = time.perf_counter() - t0
    s, steps = prof.seconds, prof.decode_steps
    tokens = sum(len(c.completion_ids) for c in outs)
    print(f"  {decoder}: {total:.2f} s for {tokens} tokens, prefill {s['prefill']:.2f} s, {steps} decode steps")
    parts = {"LM head": s.get("lm_head", 0.0), "attention/MLP/embedding/norms": s["forward"] - s.get("lm_head", 0.0)}
    parts.update({k: v for k, v in s.items() if k.startswith(("sampler", "cache"))})
    parts["other (python, eos/stop checks, logits copy)"] = total - s["prefill"] - s["forward"] - sum(
        v for k, v in s.items() if k.startswith(("sampler", "cache")))
    for part, seconds in parts.items():
        print(f"    {part:<46} {seconds:6.2f} s {100 * seconds / total:5.1f}% {1000 * seconds / steps:7.1f} ms/step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[64, 256, 2, 4], metavar=("HIDDEN", "INTER", "LAYERS", "HEADS"))
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--eos-rate", type=float, default=0.025)
    parser.add_argument("--rounds", type=int, default=3, help="alternating new/old run pairs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="also one hooked run of each: where a step goes")
    args = parser.parse_args()

    import torch

    from thinkrl.rollout.base import SamplingParams
    from thinkrl.rollout.transformers_engine import TransformersEngine

    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp()) / "model"
    model, tokenizer = build_model(tuple(args.shape), args.eos_rate, folder)
    texts = rendered(gsm8k_questions(args.prompts), "chat", folder)
    widths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    print(f"model: Qwen2 {args.shape} (hidden, intermediate, layers, heads), vocab {len(tokenizer)}, tied, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; torch threads {args.threads}")
    print(f"prompts: {len(texts)} GSM8K questions in ChatML, {min(widths)}-{max(widths)} tokens; "
          f"{args.samples} samples each, max_new_tokens {args.new_tokens}, temperature {args.temperature}, "
          f"top_p {args.top_p}")
    rows = len(texts) * args.samples
    engines = {name: TransformersEngine(model, tokenizer, batch_size=rows, decoder=name) for name in ("thinkrl", "generate")}
    label = {"thinkrl": "new (decode.py)", "generate": "old (model.generate)"}
    engines["thinkrl"].generate(texts[:1], SamplingParams(n=2, max_new_tokens=4, seed=0))  # warm-up
    results: dict[str, list[tuple[int, float, list[int]]]] = {"thinkrl": [], "generate": []}
    for round_ in range(args.rounds):
        params = SamplingParams(n=args.samples, max_new_tokens=args.new_tokens, temperature=args.temperature,
                                top_p=args.top_p, seed=round_)
        for name in ("thinkrl", "generate"):
            t0 = time.perf_counter()
            outs = engines[name].generate(texts, params)
            seconds = time.perf_counter() - t0
            lengths = [len(c.completion_ids) for c in outs]
            results[name].append((sum(lengths), seconds, lengths))
            print(f"round {round_ + 1} {label[name]:<21} {sum(lengths):5d} tokens {seconds:7.2f} s "
                  f"{sum(lengths) / seconds:7.1f} tok/s  lengths min/median/mean/max "
                  f"{min(lengths)}/{statistics.median(lengths):g}/{statistics.mean(lengths):.1f}/{max(lengths)}",
                  flush=True)
    speed = {}
    for name, runs in results.items():
        lengths = [n for _, _, ls in runs for n in ls]
        speed[name] = sum(t for t, _, _ in runs) / sum(s for _, s, _ in runs)
        print(f"{label[name]:<21} {speed[name]:7.1f} tok/s over {len(runs)} runs; lengths min/median/mean/max "
              f"{min(lengths)}/{statistics.median(lengths):g}/{statistics.mean(lengths):.1f}/{max(lengths)}, "
              f"{sum(n == args.new_tokens for n in lengths)} of {len(lengths)} at the limit")
    pairs = [(a[0] / a[1]) / (b[0] / b[1]) for a, b in zip(results["thinkrl"], results["generate"])]
    print(f"ratio new/old: {speed['thinkrl'] / speed['generate']:.2f}x (per round: "
          f"{', '.join(f'{r:.2f}' for r in pairs)})")
    if args.profile:
        print("profile (one hooked run each; hooks add a little time):")
        params = SamplingParams(n=args.samples, max_new_tokens=args.new_tokens, temperature=args.temperature,
                                top_p=args.top_p, seed=0)
        for name in ("thinkrl", "generate"):
            with torch.no_grad():
                profile(model, tokenizer, texts, params, name)


if __name__ == "__main__":
    main()
