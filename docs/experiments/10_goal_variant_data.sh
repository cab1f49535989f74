#!/usr/bin/env bash
# Experiment 10 (issue #5), the data: every goal of each layout. Experiments 04-09 showed the
# policies do not read their instruction: each training layout was recorded with one goal only,
# so the scene alone identifies the demonstration and the side/can can be memorised per layout.
# Here each of LAYOUTS new layouts (base seed 1, disjoint from experiment 01's base seed 0) is
# recorded with all 4 goals of push_to_zone (2 cans x 2 zones, `vla3d gen --goal-variants 4`):
# identical first frames, different instructions, different actions. The training directory
# OUT/push_to_zone then links experiment 01's episodes (indices 0..N-1) and the new ones after them.
# Usage: [WORKERS=n] docs/experiments/10_goal_variant_data.sh EXP01_TASK_DIR OUT [LAYOUTS]
#   EXP01_TASK_DIR: experiment 01's push_to_zone directory (01_generate_training_data.sh OUT 400)
set -euo pipefail
single="$(cd "${1:?experiment 01 push_to_zone directory}" && pwd)"
out="${2:?output root}"
layouts="${3:-300}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
variants="$out/goal_variants/push_to_zone"
vla3d gen --task push_to_zone --episodes $((layouts * 4)) --goal-variants 4 --out "$variants" \
  --perturb camera_train:1 --seed 1 --workers "${WORKERS:-2}" --report
combined="$out/push_to_zone"
mkdir -p "$combined"
index=0
for episode in "$single"/episode_* "$variants"/episode_*; do
  ln -sfn "$episode" "$combined/$(printf 'episode_%06d' "$index")"
  index=$((index + 1))
done
echo "$combined: $index episodes"
