#!/usr/bin/env bash
# Training demonstrations for the experiment (issue 5): scripted experts, 3 cameras at 128²,
# cameras jittered within the TRAINING range (camera_train:1) so the policy sees calibrated
# viewpoint variation; the evaluation camera split (camera_pose:1-3) lies outside that range.
# Usage: [TASKS="t1 t2"] [WORKERS=n] docs/experiments/01_generate_training_data.sh OUT_DIR [EPISODES_PER_TASK]
# Episode i of a task has the same seed whatever EPISODES is, so 400 episodes extend 60.
set -euo pipefail
out="${1:?output directory}"
episodes="${2:-60}"
for task in ${TASKS:-pick_place_bowl stack_cubes push_to_zone}; do
  vla3d gen --task "$task" --episodes "$episodes" --out "$out/$task" \
    --perturb camera_train:1 --seed 0 --workers "${WORKERS:-1}"
done
