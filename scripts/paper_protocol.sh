#!/usr/bin/env bash
# Tables 1 and 2 at the paper's protocol (20 epochs, batch 128, 7 000 DDPM-1000 samples, metrics at
# epochs 1, 10, 20): every column on MNIST and Fashion-MNIST, seed 42, then the transfer-learning
# runs with their classical → classical control, seeds 43 and 44 for classical and the paper's best
# hybrid per dataset, and the released-code twin of each hybrid. Needs a GPU: on a 2-core CPU one
# classical run alone takes weeks. Rerunning resumes; finished runs are skipped.
# The list of runs is `python -m qhd_lib.experiments plan paper` (qhd_lib/experiments/plans.py).
#
#   bash scripts/paper_protocol.sh              # everything, in that order
#   ONLY=mnist bash scripts/paper_protocol.sh   # one dataset
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

PLAN=$("$PY" -m qhd_lib.experiments plan paper ${ONLY:+--dataset "$ONLY"})  # fails here if the plan does not resolve
mapfile -t STEPS <<< "$PLAN"
for step in "${STEPS[@]}"; do
  eval "\"\$PY\" -m qhd_lib.experiments $step"
done
