#!/usr/bin/env bash
# The reduced-protocol comparison the experiments chapter shows, sized for a 2-core CPU (~80 min).
#
# NOT the paper's protocol: 2 400 MNIST images, 2 epochs (150 steps) at batch 32, 200 samples by
# DDIM-50 scored against 500 real images. Every run.json lists these deviations. What it can show:
# the whole pipeline, classical vs 7HQConv QVU-Net (the paper's best MNIST hybrid) on the same
# device, the seed-to-seed spread at this size, and the released code's variant beside ours.
# Rerunning resumes unfinished runs; finished ones are skipped by the runner itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=results/reduced
COMMON=(--dataset mnist --scale demo --epochs 2 --eval-epochs 1,2 --train-images 2400 --batch-size 32
        --samples 200 --sample-batch 200 --n-real 500 --sampler ddim --sampling-steps 50 --quiet)

for seed in 42 43 44; do
  for model in classical 7hqconv; do
    "$PY" -m qhd_lib.experiments run --model "$model" --seed "$seed" --out "$OUT/mnist_${model}_seed${seed}" "${COMMON[@]}"
  done
done
"$PY" -m qhd_lib.experiments run --model 7hqconv --released-code --seed 42 \
  --out "$OUT/mnist_7hqconv_released_seed42" "${COMMON[@]}"

"$PY" -m qhd_lib.experiments compare "$OUT"/mnist_*_seed* --out "$OUT/comparison.json"
