#!/usr/bin/env bash
# Tables 1 and 2 at the paper's protocol (20 epochs, batch 128, 7 000 DDPM-1000 samples, metrics at
# epochs 1, 10, 20): every column on MNIST and Fashion-MNIST, seed 42, then seeds 43 and 44 for
# classical and the paper's best hybrid per dataset, the transfer-learning runs with their
# classical → classical control, and the released-code twin of each hybrid. Needs a GPU: on a
# 2-core CPU one classical run alone takes weeks. Rerunning resumes; finished runs are skipped.
#
#   bash scripts/paper_protocol.sh              # everything, in the order above
#   ONLY=mnist bash scripts/paper_protocol.sh   # one dataset
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=results/paper

run() {  # dataset model seed [extra flags...]
  local dataset=$1 model=$2 seed=$3; shift 3
  local name="${dataset}_${model}${RUN_SUFFIX:-}_seed${seed}"
  "$PY" -m qhd_lib.experiments run --dataset "$dataset" --model "$model" --scale paper --seed "$seed" \
    --out "$OUT/$name" "$@"
}

for dataset in ${ONLY:-mnist fashion_mnist}; do
  if [ "$dataset" = mnist ]; then best=7hqconv; source_epochs=19; else best=quanvunet; source_epochs=18; fi
  for model in classical 1hqconv 7hqconv fullhqconv quanvunet; do run "$dataset" "$model" 42; done
  RUN_SUFFIX=_transfer run "$dataset" 1fqconv 42 --transfer-from classical --transfer-epochs "$source_epochs"
  RUN_SUFFIX=_transfer run "$dataset" classical 42 --transfer-from classical --transfer-epochs "$source_epochs"
  for seed in 43 44; do run "$dataset" classical "$seed"; run "$dataset" "$best" "$seed"; done
  for model in 1hqconv 7hqconv fullhqconv quanvunet; do
    RUN_SUFFIX=_released run "$dataset" "$model" 42 --released-code
  done
  "$PY" -m qhd_lib.experiments compare "$OUT/${dataset}"_*_seed* --out "$OUT/${dataset}_comparison.json"
done
