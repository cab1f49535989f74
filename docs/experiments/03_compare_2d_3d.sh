#!/usr/bin/env bash
# The headline experiment of docs/results.md: the 2D baseline vs the full 3D policy, same
# demonstrations (DATA = one task's episodes from 01_generate_training_data.sh), same total
# optimiser steps, batch, learning rate, seed; then closed-loop evaluation of both on the nominal
# suite and the camera split (camera_pose:1, viewpoints outside the training range, true
# calibration given), EPISODES episodes per cell, evaluation seeds >= 1,000,000.
#   3D: stage 1 S1 steps, then stage 2 S2 steps initialised from stage 1 (METHOD §6).
#   2D: every 3D component off, one stage of S1 + S2 steps.
# THREADS torch threads for training (default 1: session 2 ran beside other work; session 3's
# longer run used THREADS=2, the whole 2-core machine, 0.44 s per stage-1 step); 2 rollout workers
# for evaluation. Resumable: rerun the same command; finished parts are skipped.
# Usage: [THREADS=n] [TASK=name] docs/experiments/03_compare_2d_3d.sh DATA RUN_ROOT [S1 [S2 [EPISODES [LR]]]]
set -euo pipefail
data="${1:?episode directory of one task, e.g. OUT/push_to_zone}"
root="${2:?run root}"
s1="${3:-1800}"
s2="${4:-1200}"
episodes="${5:-50}"
lr="${6:-1e-3}"
task="${TASK:-$(basename "$data")}"   # 01_generate_training_data.sh names the directory after the task
common=(--data "$data" --preset cpu --batch-size 8 --seed 0 --lr "$lr" --workers 1 --threads "${THREADS:-1}"
        --checkpoint-every 50 --log-every 10 --no-progress)
resume_flag() { [ -d "$1" ] && echo --resume || true; }
evaluate() {  # checkpoint label
  for suite in nominal camera_pose:1; do
    out="$root/eval/$2_${suite/:/_}.json"
    [ -f "$out" ] || vla3d eval --checkpoint "$1" --suite "$suite" --episodes "$episodes" --tasks "$task" \
      --workers 2 --strips 1 --label "$2" --json "$out"
  done
}
mkdir -p "$root/eval"
vla3d train "${common[@]}" --steps "$s1" --out "$root/3d/stage1" --stage 1 $(resume_flag "$root/3d/stage1")
vla3d train "${common[@]}" --steps "$s2" --out "$root/3d/stage2" --stage 2 --init "$root/3d/stage1/final" \
  $(resume_flag "$root/3d/stage2")
evaluate "$root/3d/stage2/final" 3d
vla3d train "${common[@]}" --steps "$((s1 + s2))" --out "$root/2d" --stage 1 \
  --disable fusion,instances,completion,aggregation $(resume_flag "$root/2d")
evaluate "$root/2d/final" 2d
