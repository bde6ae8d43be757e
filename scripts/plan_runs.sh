#!/usr/bin/env bash
# The epoch-1 experiment's runs (`python -m qhd_lib.experiments plan epoch1`), one after another,
# for a 2-core CPU in the background. Start it from a worktree at the tagged commit, so that other
# edits cannot leak into a running process:
#
#   git worktree add --detach /tmp/epoch1 epoch1-v1 && cd /tmp/epoch1
#   PY=/path/to/.venv/bin/python nohup bash scripts/epoch1_runs.sh /path/to/repo 1 2 > run.log 2>&1 &
#
# Each run trains in $QHD_RUNS_DIR (default ~/.cache/qhd-book/runs/epoch1/<run>): checkpoints and
# sample chunks stay there, and rerunning resumes a run that was cut off. A finished run's
# artefacts (run.json, samples, grids, log) are published into DEST/results/epoch1/<run>/; runs
# already published in DEST are skipped. FIRST and LAST (1-based, default: all) pick runs of the
# plan in its order.
set -euo pipefail
DEST=$(realpath "${1:?usage: epoch1_runs.sh DEST_REPO [FIRST [LAST]]}")
cd "$(dirname "$0")/.."
PY=${PY:-python}
STATE=${QHD_RUNS_DIR:-$HOME/.cache/qhd-book/runs}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this tree's qhd_lib, not an installed one

PLAN=$("$PY" -m qhd_lib.experiments plan epoch1 | grep '^run ')  # fails if the plan does not resolve
mapfile -t RUNS <<< "$PLAN"
FIRST=${2:-1}
LAST=${3:-${#RUNS[@]}}
for ((i = FIRST; i <= LAST; i++)); do
  step=${RUNS[i - 1]}
  out=${step##* --out }            # results/epoch1/<run>
  state="$STATE/epoch1/$(basename "$out")"
  if [[ -f "$DEST/$out/run.json" ]] && grep -q '"status": "complete"' "$DEST/$out/run.json"; then
    echo "[$i] $out: published already, skipped"
    continue
  fi
  echo "[$i] $out: started $(date -u +%FT%TZ)"
  eval "\"\$PY\" -m qhd_lib.experiments ${step% --out *} --out \"\$state\""
  "$PY" -m qhd_lib.experiments publish --run "$state" --to "$DEST/$out"
  echo "[$i] $out: published $(date -u +%FT%TZ)"
done
