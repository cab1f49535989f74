#!/usr/bin/env bash
# Every perturbation dimension of the suite (issue #5: "the other perturbation dimensions"):
# `vla3d eval --suite all` = nominal + 10 dimensions x levels 1..3 (31 cells), EPISODES episodes
# per cell, for each CHECKPOINT=LABEL pair given; then one table and one bar plot of all of them.
# Same evaluation seeds (run seed 0) in every cell, so the cells and the policies are paired.
# Usage: docs/experiments/06_perturbation_sweep.sh OUT_DIR EPISODES TASK CHECKPOINT=LABEL [CHECKPOINT=LABEL ...]
set -euo pipefail
out="${1:?output directory}"
episodes="${2:?episodes per cell}"
task="${3:?task}"
shift 3
mkdir -p "$out"
for pair in "$@"; do
  checkpoint="${pair%%=*}"
  label="${pair#*=}"
  json="$out/${label}_all.json"
  [ -f "$json" ] || vla3d eval --checkpoint "$checkpoint" --suite all --episodes "$episodes" --tasks "$task" \
    --workers 2 --strips 0 --label "$label" --json "$json"
done
python -m vla3d_ros.evaluate.report "$out"/*_all.json --by perturbation --markdown "$out/table.md" --plot "$out/bars.png"
