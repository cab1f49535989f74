#!/usr/bin/env bash
# Experiment 20 (issue 16, item 5): one policy of two tasks, the instruction selecting the task.
# Continues INIT (default: the shipped checkpoint, push_to_zone only) on pick_place_bowl and
# push_to_zone together (19_two_task_data.sh), with the shipped recipe (experiments 16-17: batch 8,
# seed 0, 3e-4 peak, --precision auto, every step paired with one of its episode's training
# wordings (--instruction-variants), stage 1 then stage 2); stage 1 also refits the statistics
# fitted on the data, which the init fitted on push_to_zone alone:
#   --renormalize      state/action statistics (push_to_zone pushes with a closed gripper and a still
#                      tool: pick_place_bowl's finger joints lie 4 std out of its statistics, its tool
#                      orientation up to 8 and its rotation actions 7-8, 99th percentiles; a constant
#                      gripper action has no scale there at all);
#   --refit-whitening  the instruction whitening (push_to_zone's maps pick_place_bowl's
#                      instructions to 8-11x the norm of a training instruction).
# pick_place_bowl's directory comes first: the instruction-embedding cache is kept in the first
# --data directory, so nothing is written into the push_to_zone data another run may be reading.
# Resumable: rerunning the same command continues from the newest checkpoint.
# Evaluate per task: docs/experiments/15_generalisation_eval.sh RUN/stage2/final val OUT (the
# checkpoint records both tasks; TASKS=... picks some).
# Usage: [THREADS=n] [INIT=ckpt] docs/experiments/20_two_task_training.sh DATA19 RUN [S1 [S2]]
#   DATA19: 19_two_task_data.sh OUT (holds pick_place_bowl/ and push_to_zone/; paths without spaces)
set -euo pipefail
data="${1:?19_two_task_data.sh output root (holds pick_place_bowl/ and push_to_zone/)}"
run="${2:?run root}"
s1="${3:-6000}"
s2="${4:-2000}"
for task in pick_place_bowl push_to_zone; do
  [ -d "$data/$task" ] || { echo "20_two_task_training.sh: error: $data/$task is missing (19_two_task_data.sh)" >&2; exit 2; }
done
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STAGE1_FLAGS="--renormalize --refit-whitening" FLAGS="--instruction-variants --data $data/push_to_zone" \
  exec "$here/14_train_randomised.sh" "$data/pick_place_bowl" "$run" "$s1" "$s2"
