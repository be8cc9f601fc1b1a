"""Sandbox throughput on HumanEval: canonical solutions per second at a few pool sizes.

    .venv/bin/python bench/bench_sandbox.py [--workers 1 2 4] [--limit 164]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from thinkrl.sandbox import isolation_report, run_many

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "humaneval" / "HumanEval.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--limit", type=int, default=164)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.read_text().splitlines()][: args.limit]
    jobs = [(r["prompt"] + r["canonical_solution"], r["test"] + f"\ncheck({r['entry_point']})\n", r["entry_point"], r["prompt"]) for r in rows]
    print(f"isolation: {isolation_report()['mode']}")
    for workers in args.workers:
        start = time.monotonic()
        results = run_many(jobs, max_workers=workers)
        elapsed = time.monotonic() - start
        passed = sum(r.all_passed for r in results)
        median_ms = 1000 * statistics.median(r.duration_s for r in results)
        print(f"workers={workers}: {len(jobs) / elapsed:6.1f} programs/s, median run {median_ms:5.1f} ms, {passed}/{len(jobs)} passed")


if __name__ == "__main__":
    main()
