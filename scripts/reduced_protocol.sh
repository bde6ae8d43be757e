#!/usr/bin/env bash
# The reduced-protocol comparison the experiments chapter shows, sized for a 2-core CPU (~80 min).
#
# NOT the paper's protocol: 2 400 MNIST images, 2 epochs (150 steps) at batch 32, 200 samples by
# DDIM-50 scored against 500 real images. Every run.json lists these deviations. What it can show:
# the whole pipeline, classical vs 7HQConv QVU-Net (the paper's best MNIST hybrid) on the same
# device, the seed-to-seed spread at this size, and the released code's variant beside ours.
# The list of runs is `python -m qhd_lib.experiments plan reduced` (qhd_lib/experiments/plans.py).
# Rerunning resumes unfinished runs; finished ones are skipped by the runner itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

PLAN=$("$PY" -m qhd_lib.experiments plan reduced)  # fails here if the plan does not resolve
mapfile -t STEPS <<< "$PLAN"
for step in "${STEPS[@]}"; do
  [[ $step == run* ]] && step+=" --quiet"
  eval "\"\$PY\" -m qhd_lib.experiments $step"
done
