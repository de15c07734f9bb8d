#!/usr/bin/env bash
# ShapesWorld v2's bigger recipe, prepared for a lent GPU machine (issue 15): the transformer at width 256,
# depth 8, batch 96 (24 through the whole schedule), bitwise self-correction, trained from scratch on the
# shipped VAE for 8 minutes of wall time (the cosine schedule is fitted to it), then the cfg/tau sweep and
# the report. Everything it needs ships with the pack; nothing is downloaded.
#   bash scripts/train_shapesworld_gpu.sh OUT_DIR
# OUT_DIR then holds shapesworld_infinity.safetensors, t5/, sampling.json and the train log; copy in the
# shipped clip/ (or a retrained one) and evaluate with `python -m ttsvar_core evaluate --assets OUT_DIR`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: $0 OUT_DIR}
minutes=${TTSVAR_TRAIN_MINUTES:-8}
mkdir -p "$out"
cp ttsvar_core/assets/shapesworld/shapesworld_vae.safetensors "$out/"
cp -r ttsvar_core/assets/shapesworld/clip "$out/"
PYTHONUNBUFFERED=1 python -m ttsvar_core.shapesworld.train transformer --out "$out" --device cuda \
    --steps 100000 --fit-minutes "$minutes" --threads 8 \
    --hparams '{"width": 256, "depth": 8, "batch": 96, "full": 24, "flip_max": 0.2, "lr": 1e-3}' \
    2>&1 | tee "$out/train.log"
PYTHONUNBUFFERED=1 python -m ttsvar_core.shapesworld.train sampling --out "$out" 2>&1 | tee "$out/sampling.log"
