#!/usr/bin/env bash
# The benchmark on a GPU with the 2B-shaped model (random weights, bf16 blocks) at 1024 px.
# Prepared to run as is on a lent GPU machine, in well under 5 minutes:
#   bash benchmarks/gpu_2b.sh [OUT.json]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results-gpu-2b.json}
# two repeats (the slower one is kept) keep the run short: every strategy at 1024 px takes 1-5 s
PYTHONUNBUFFERED=1 python benchmarks/bench.py --config 2b --device cuda --budget 1M --n 1 2 4 --low-memory --repeat 2 \
    --out "$out"
