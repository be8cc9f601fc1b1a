"""The demo under each algorithm preset and seed, and one markdown table that compares them.

Run: `.venv/bin/python bench/compare_algos.py --algos grpo rloo gspo --seeds 0 1 2 --jobs 2`.
Each run is `thinkrl demo --set algo=NAME --set run.seed=S` (plus `--set` extras, e.g.
`updates_per_pass=2`) into OUT/NAME-S; a run whose summary.json exists is not run again, so
an interrupted sweep continues. The table gives, per preset, held-out pass@1 before and after
for each seed and their mean, the mean pass@k (k = the demo's eval_k) after, the mean training accuracy over the first 20 steps (how fast
it learns) and the mean time of a run. Runs are in parallel processes with 1 torch thread
each when --jobs > 1: compare the times only within one sweep.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THINKRL = [sys.executable, "-m", "thinkrl.cli"]


def run(name: str, seed: int, out: Path, extra: list[str], threads: int) -> Path:
    folder = out / f"{name}-{seed}"
    if not (folder / "summary.json").exists():
        sets = [f"algo={name}", f"run.seed={seed}", f"run.output_dir={folder}", f"run.torch_threads={threads}", *extra]
        command = [*THINKRL, "demo", *(arg for s in sets for arg in ("--set", s))]
        with open(out / f"{name}-{seed}.log", "w") as log:
            proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False, cwd=REPO)
        if proc.returncode:
            raise SystemExit(f"{name} seed {seed} failed: see {out / f'{name}-{seed}.log'}")
    return folder


def early_accuracy(folder: Path, steps: int = 20) -> float:
    rows = [json.loads(line) for line in (folder / "train" / "metrics.jsonl").read_text().splitlines()]
    values = [r["accuracy"] for r in rows if r["step"] <= steps and "accuracy" in r]
    return sum(values) / max(len(values), 1)


def table(names: list[str], seeds: list[int], out: Path) -> str:
    header = ("| preset | pass@1 before -> after, per seed | mean pass@1 after | mean pass@k after | "
              "train accuracy, steps 1-20 | s/run |")
    lines = [header, "| --- | --- | --- | --- | --- | --- |"]
    for name in names:
        summaries = [json.loads((out / f"{name}-{s}" / "summary.json").read_text()) for s in seeds]
        per_seed = ", ".join(f"{x['before']['pass_at_1']:.1%} -> {x['after']['pass_at_1']:.1%}" for x in summaries)
        after = statistics.mean(x["after"]["pass_at_1"] for x in summaries)
        at_k = statistics.mean(x["after"]["pass_at_k"] for x in summaries)
        early = statistics.mean(early_accuracy(out / f"{name}-{s}") for s in seeds)
        seconds = statistics.mean(x["seconds"] for x in summaries)
        lines.append(f"| {name} | {per_seed} | {after:.1%} | {at_k:.1%} | {early:.1%} | {seconds:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["grpo", "dr_grpo", "dapo", "rloo", "reinforce_pp_baseline",
                                                       "gspo", "cispo", "pass_at_k"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="extra", action="append", default=[], help="more demo settings, field=value")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each with 1 torch thread if > 1)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare-algos"))
    args = parser.parse_args()
    from thinkrl.algos.presets import preset

    for name in args.algos:
        preset(name)  # an unknown name fails before anything runs
    args.out.mkdir(parents=True, exist_ok=True)
    threads = 1 if args.jobs > 1 else 0
    # one worker per seed at most, so two processes never build the same seed's tiny base at once
    by_seed = {seed: [(name, seed) for name in args.algos] for seed in args.seeds}
    with ThreadPoolExecutor(max_workers=max(1, min(args.jobs, len(by_seed)))) as pool:
        list(pool.map(lambda jobs: [run(n, s, args.out, args.extra, threads) for n, s in jobs], by_seed.values()))
    print(table(args.algos, args.seeds, args.out))


if __name__ == "__main__":
    main()
