#!/usr/bin/env bash
# Smoke test of experiments 19-20 (issue 16, item 5) at toy sizes: the two-task data, training and
# per-task evaluation path end to end, in minutes of CPU instead of hours. A tiny push_to_zone-only
# policy with the shipped checkpoint's additions (instruction whitening, FiLM, reasoning anchor,
# grounding) stands in for the shipped checkpoint; 32 x 32 images; 2 + 2 optimiser steps.
# Proves: 19 records pick_place_bowl beside push_to_zone; 20 continues a one-task policy on both
# (renormalised, whitening refitted); the checkpoint records both tasks; `vla3d eval` runs each by
# default and generalisation_table.py prints one table per task. Success rates mean nothing here.
# Usage: [THREADS=n] docs/experiments/20_two_task_smoke.sh OUT
set -euo pipefail
out="${1:?output root}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export THREADS="${THREADS:-1}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
vla3d gen --task push_to_zone --episodes 2 --goal-variants 2 --image-size 32 32 --out "$out/push/push_to_zone" \
  --perturb camera_wide_train light_train background_train zones_train robot_init_train --seed 2
[ -d "$out/init/final" ] || vla3d train --data "$out/push/push_to_zone" --out "$out/init" --preset tiny --stage 1 \
  --steps 2 --batch-size 2 --whiten-instructions --instruction-film --reasoning-anchor --grounding-weight 0.1 \
  --threads "$THREADS" --no-progress
GEN_FLAGS="--image-size 32 32" WORKERS=1 "$here/19_two_task_data.sh" "$out/push/push_to_zone" "$out/data" 1 1 1
INIT="$out/init/final" "$here/20_two_task_training.sh" "$out/data" "$out/run" 2 2
for suite in nominal language:1; do
  json="$out/eval/${suite%%:*}.json"
  [ -f "$json" ] || vla3d eval --checkpoint "$out/run/stage2/final" --suite "$suite" --episodes 1 --max-steps 5 \
    --strips 0 --json "$json"
done
python "$here/generalisation_table.py" "$out"/eval/*.json
