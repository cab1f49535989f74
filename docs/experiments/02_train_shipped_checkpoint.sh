#!/usr/bin/env bash
# The shipped checkpoint (vla3d_ros/assets/checkpoints/default): the full 3D policy, cpu preset,
# trained on the pick_place_bowl demonstrations of 01_generate_training_data.sh.
# Stage 1 (vision, trunk, fusion, instances, action expert) then stage 2 (predictor,
# aggregation, action expert), STEPS optimiser steps each, batch 8, seed 0. Resumable: rerun
# the same command and it continues from the run's last checkpoint.
# Usage: docs/experiments/02_train_shipped_checkpoint.sh DATA_DIR RUN_DIR [STEPS]
set -euo pipefail
data="${1:?episode directory, e.g. OUT_DIR/pick_place_bowl}"
run="${2:?run directory}"
steps="${3:-1000}"
resume=()
[ -d "$run" ] && resume=(--resume)
vla3d train --data "$data" --out "$run" --preset cpu --stage both --steps "$steps" \
  --batch-size 8 --seed 0 --workers 1 --threads 2 --checkpoint-every 100 --no-progress "${resume[@]}"
