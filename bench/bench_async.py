"""Synchronous vs asynchronous GRPO (rollout.max_staleness=1) on the demo's setup: wall time
per step and where it goes, runs alternating, each in its own process.

Run: `.venv/bin/python bench/bench_async.py --rounds 2 --steps 12`.
Both runs are the demo's R1-Zero GRPO on the tiny default (seed 0), the trainer at 1 torch
thread; the asynchronous run's sampler process gets 1 more thread (so it uses the machine's
second core, which the synchronous run leaves idle). The first 2 steps of each run are
warm-up (the sampler process starts then) and not counted. Printed: seconds per step, the
ratio sync/async, and per step the trainer's generation (sync: sampling and scoring; async:
waiting for the sampler and scoring), its training, the sampler's busy time and the trainer's
wait.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WARMUP = 2


def child(mode: str, steps: int, out: Path) -> None:
    from thinkrl.pipeline.demo import DemoConfig, grpo_config
    from thinkrl.train.grpo import train_grpo

    demo = DemoConfig.model_validate({"run": {"steps": steps, "torch_threads": 1, "output_dir": str(out)},
                                      "max_staleness": 1 if mode == "async" else 0})
    cfg = grpo_config(demo)
    cfg.run.plot = False
    train_grpo(cfg)


def measure(mode: str, steps: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, __file__, "--child", mode, "--steps", str(steps), "--out", tmp],
                              capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
        rows = [json.loads(line) for line in (Path(tmp) / "train" / "metrics.jsonl").read_text().splitlines()]
    return rows[WARMUP:]


def summary(rows: list[dict]) -> dict[str, float]:
    def median(key: str) -> float:
        values = [r[key] for r in rows if key in r]
        return statistics.median(values) if values else 0.0

    return {"step_s": statistics.median(r["time/generation_s"] + r["time/train_s"] for r in rows),
            "generation_s": median("time/generation_s"), "train_s": median("time/train_s"),
            "sampler_busy_s": median("async/sampler_busy_s"), "trainer_wait_s": median("async/trainer_wait_s"),
            "accuracy": statistics.mean(r.get("accuracy", 0.0) for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--child", choices=["sync", "async"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.out)
        return
    runs: dict[str, list[dict]] = {"sync": [], "async": []}
    for _ in range(args.rounds):
        for mode in runs:
            runs[mode] += measure(mode, args.steps)
    results = {mode: summary(rows) for mode, rows in runs.items()}
    print(f"[demo GRPO, {args.rounds} rounds x {args.steps - WARMUP} timed steps each, trainer 1 thread]")
    for mode, r in results.items():
        print(f"  {mode:5s}: {r['step_s']:.2f} s/step = generation {r['generation_s']:.2f} + train {r['train_s']:.2f}; "
              f"sampler busy {r['sampler_busy_s']:.2f} s, trainer waited {r['trainer_wait_s']:.2f} s; "
              f"train accuracy {r['accuracy']:.1%}")
    print(f"  ratio: steps/s async/sync = {results['sync']['step_s'] / results['async']['step_s']:.2f}x")


if __name__ == "__main__":
    main()
