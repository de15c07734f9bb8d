#!/usr/bin/env bash
# Issue 17's GPU table, prepared for a lent GPU machine (random weights at the real shapes, so no download):
# model (2B, 8B) x budget (0.25M, 1M) x weight storage (bf16, fp8), each with N = 1, 2, 4 and the
# block-streaming (low-memory) runs, paper selection decodes only to keep it short. Prints one table at the end.
#   bash benchmarks/gpu_table.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/gpu-table}
mkdir -p "$out"
for config in 2b 8b; do
  for budget in 0.25M 1M; do
    for storage in compute fp8; do
      PYTHONUNBUFFERED=1 python benchmarks/bench.py --config $config --device cuda --budget $budget --n 1 2 4 \
          --weight-storage $storage --decodes paper --low-memory --repeat 1 \
          --out "$out/$config-$budget-$storage.json" > "$out/$config-$budget-$storage.log" 2>&1 \
        || echo "FAILED: $config $budget $storage (see $out/$config-$budget-$storage.log)"
    done
  done
done
python benchmarks/bench_table.py "$out"/*.json
