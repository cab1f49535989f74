#!/usr/bin/env bash
# Experiment 14 (issue 16), the training: continue a checkpoint (default: the shipped one,
# experiment 12) on the randomised training distribution (14_randomised_training_data.sh), with
# experiment 12's recipe (stage 1 then stage 2 at a 3e-4 peak; batch 8, seed 0) and the forward in
# the precision the hardware computes natively (--precision auto: bf16 on CPUs with bf16 units).
#   stage 1: S1 steps from INIT (stage-2 modules keep their training and stay frozen)
#   stage 2: S2 steps from the new stage-1 final
# Resumable: rerunning the same command continues from the newest checkpoint.
# STAGE1_FLAGS: extra `vla3d train` flags of stage 1 (experiment 16: --renormalize); FLAGS: of both
# stages (experiment 17: --instruction-variants).
# Usage: [THREADS=n] [INIT=ckpt] [STAGE1_FLAGS=...] [FLAGS=...] docs/experiments/14_train_randomised.sh DATA RUN [S1 [S2 [LR]]]
set -euo pipefail
data="${1:?episode directory (14_randomised_training_data.sh OUT/push_to_zone)}"
root="${2:?run root}"
s1="${3:-3000}"
s2="${4:-1500}"
lr="${5:-3e-4}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
init="${INIT:-$here/vla3d_ros/assets/checkpoints/default}"
common=(--data "$data" --preset cpu --batch-size 8 --seed 0 --lr "$lr" --workers 1 --threads "${THREADS:-2}"
        --checkpoint-every 100 --log-every 10 --no-progress --precision auto ${FLAGS:-})
resume_flag() { [ -f "$1/run.json" ] && echo --resume || true; }
vla3d train "${common[@]}" --steps "$s1" --out "$root/stage1" --stage 1 --init "$init" ${STAGE1_FLAGS:-} \
  $(resume_flag "$root/stage1")
vla3d train "${common[@]}" --steps "$s2" --out "$root/stage2" --stage 2 --init "$root/stage1/final" \
  $(resume_flag "$root/stage2")
