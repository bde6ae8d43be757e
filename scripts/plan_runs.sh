#!/usr/bin/env bash
# The runs of a CPU plan (`python -m qhd_lib.experiments plan epoch1|transfer`), one after another,
# for a 2-core CPU in the background. Start it from a worktree at the plan's tagged commit, so that
# other edits cannot leak into a running process:
#
#   git worktree add --detach /tmp/transfer transfer-v2 && cd /tmp/transfer
#   PY=/path/to/.venv/bin/python nohup bash scripts/plan_runs.sh transfer /path/to/repo > run.log 2>&1 &
#
# Each run trains in $QHD_RUNS_DIR (default ~/.cache/qhd-book/runs/<plan>/<run>): checkpoints and
# sample chunks stay there, and rerunning resumes a run that was cut off. A finished run's
# artefacts (run.json, samples, grids, log) are published into DEST/results/<plan>/<run>/; runs
# already published in DEST are skipped. FIRST and LAST (1-based, default: all) pick runs of the
# plan in its order. (At the tag epoch1-v1 this script was scripts/epoch1_runs.sh DEST FIRST LAST.)
set -euo pipefail
USAGE="usage: plan_runs.sh epoch1|transfer DEST_REPO [FIRST [LAST]]"
PLAN_NAME=${1:?$USAGE}
DEST=$(realpath "${2:?$USAGE}")
cd "$(dirname "$0")/.."
PY=${PY:-python}
STATE=${QHD_RUNS_DIR:-$HOME/.cache/qhd-book/runs}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this tree's qhd_lib, not an installed one

PLAN=$("$PY" -m qhd_lib.experiments plan "$PLAN_NAME" | grep '^run ')  # fails if it does not resolve
mapfile -t RUNS <<< "$PLAN"
FIRST=${3:-1}
LAST=${4:-${#RUNS[@]}}
for ((i = FIRST; i <= LAST; i++)); do
  step=${RUNS[i - 1]}
  out=${step##* --out }            # results/<plan>/<run>
  state="$STATE/$PLAN_NAME/$(basename "$out")"
  if [[ -f "$DEST/$out/run.json" ]] && grep -q '"status": "complete"' "$DEST/$out/run.json"; then
    echo "[$i] $out: published already, skipped"
    continue
  fi
  echo "[$i] $out: started $(date -u +%FT%TZ)"
  eval "\"\$PY\" -m qhd_lib.experiments ${step% --out *} --out \"\$state\""
  "$PY" -m qhd_lib.experiments publish --run "$state" --to "$DEST/$out"
  echo "[$i] $out: published $(date -u +%FT%TZ)"
done
