#!/usr/bin/env bash
# thinkrl vs TRL on one H100/H200 in under 8 minutes: a Qwen2.5-0.5B-shaped random model
# (hidden 896, MLP 4864, 24 layers, 14 heads) with the real 151k Qwen2.5 vocabulary and tied
# embeddings, bf16, 8 GSM8K prompts x 8 samples, 128 new tokens, completions of varied length
# (scenario c of bench_trl.py). Needs torch with CUDA, the package (`pip install -e .`) and
# TRL (`pip install "trl==1.16.*"`, or a wheel carried along). Prints the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
"$PYTHON" -c "import torch, trl; assert torch.cuda.is_available(), 'no CUDA GPU'"
exec "$PYTHON" bench/bench_trl.py --gpu --scenarios c --qwen-shape 896 4864 24 14 --rounds 2 --steps 4 "$@"
