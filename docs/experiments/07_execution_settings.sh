#!/usr/bin/env bash
# How the chunk executor runs a checkpoint's action chunks, chosen on VALIDATION episodes: run
# seed 1 (episode seeds 1,010,000+), disjoint from the reported evaluations (run seed 0) and from
# training. Grid: re-plan every 1 or 2 control steps (10 / 5 Hz inference) x ACT temporal
# ensembling k=0.01 (the runtime default: near-uniform mean of every chunk covering the step) or
# off (the newest chunk only). One table + plot of the grid.
# Usage: docs/experiments/07_execution_settings.sh CHECKPOINT OUT_DIR TASK [EPISODES]
set -euo pipefail
checkpoint="${1:?checkpoint}"
out="${2:?output directory}"
task="${3:?task}"
episodes="${4:-50}"
mkdir -p "$out"
for replan in 2 1; do
  for ensemble in 0.01 off; do
    label="replan${replan}_ensemble_${ensemble}"
    json="$out/$label.json"
    [ -f "$json" ] || vla3d eval --checkpoint "$checkpoint" --suite nominal --episodes "$episodes" --tasks "$task" \
      --seed 1 --workers 2 --strips 0 --replan-every "$replan" --ensemble-coeff "$ensemble" --label "$label" \
      --json "$json"
  done
done
python -m vla3d_ros.evaluate.report "$out"/replan*.json --markdown "$out/table.md" --plot "$out/bars.png" \
  --title "Execution settings on validation episodes (run seed 1)"
