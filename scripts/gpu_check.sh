#!/usr/bin/env bash
# The one GPU run to make when a GPU machine is lent (see README): the reference preset (MONAI
# FlexibleUNet, EfficientNet-B4, trained from scratch: no weights are downloaded) on Endoscapes-Seg50
# at half resolution, background as OOD, bf16 autocast and channels-last; then prediction
# throughput on the GPU next to the bare forward. Prints wall times; results land in $OUT (or runs/).
#
#   scripts/gpu_check.sh [ENDOSCAPES_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/endoscapes_seg50}
OUT=${OUT:-runs}
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
start=$(date +%s)
$PY -m oodseg crossval --dataset endoscapes --data-root "$DATA" --scale 0.5 --protocols background \
    --preset reference --device cuda --precision bf16-mixed --channels-last \
    --out "$OUT/endoscapes-h-ref-gpu" --overwrite
echo "endoscapes reference preset, half resolution: $(( $(date +%s) - start )) s"
$PY bench/predict_throughput.py --device cuda --repeats 5 | tee "$OUT/predict_throughput_gpu.txt"
