#!/usr/bin/env bash
# The shipped checkpoint (vla3d_ros/assets/checkpoints/default): the full 3D policy, cpu preset,
# trained on the pick_place_bowl demonstrations of 01_generate_training_data.sh.
# Stage 1 (vision, trunk, fusion, instances, action expert), then stage 2 (predictor,
# aggregation, action expert) initialised from stage 1's final checkpoint; batch 8, seed 0,
# one torch thread (measured: 2 threads on a loaded 2-core machine are ~8x slower per step).
# Resumable: rerun the same command and each stage continues from its last checkpoint.
# STAGE1_INIT=CKPT continues stage 1 from an earlier stage-1 checkpoint (a new warm-up + cosine).
# Usage: [STAGE1_INIT=CKPT] docs/experiments/02_train_shipped_checkpoint.sh DATA_DIR RUN_DIR [STAGE1_STEPS [STAGE2_STEPS]]
set -euo pipefail
data="${1:?episode directory, e.g. OUT_DIR/pick_place_bowl}"
run="${2:?run directory}"
stage1_steps="${3:-900}"
stage2_steps="${4:-400}"
common=(--data "$data" --preset cpu --batch-size 8 --seed 0 --workers 1
        --threads "${THREADS:-1}" --checkpoint-every 25 --no-progress)
resume_flag() { [ -d "$1" ] && echo --resume || true; }
stage1_init=()
[ -n "${STAGE1_INIT:-}" ] && stage1_init=(--init "$STAGE1_INIT")
vla3d train "${common[@]}" --steps "$stage1_steps" --out "$run/stage1" --stage 1 "${stage1_init[@]}" $(resume_flag "$run/stage1")
vla3d train "${common[@]}" --steps "$stage2_steps" --out "$run/stage2" --stage 2 --init "$run/stage1/final" $(resume_flag "$run/stage2")
