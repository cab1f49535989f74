#!/usr/bin/env bash
# Experiment 27 (issue 16, item 5): experiment 26's two-task policy trained longer.
# Experiment 26 (20_two_task_training.sh, 5000 + 1500 steps) kept push_to_zone and learned
# pick_place_bowl's reach and grasp but not the carry: traced on validation episodes
# (the cube held 4 cm up), it asked for +1-2 mm of lift per step where the expert lifts 2 cm,
# and drifted until the 80-step budget ran out (0 % success); its stage-1 action loss was still
# falling (0.36 -> 0.13). The same data and recipe, continued from its final checkpoint for S1
# stage-1 and S2 stage-2 steps; the statistics and the whitening stay experiment 26's (they were
# fitted on this same data: no --renormalize / --refit-whitening).
# Resumable: rerunning the same command continues from the newest checkpoint.
# Evaluate per task: docs/experiments/15_generalisation_eval.sh RUN/stage2/final val OUT
# Usage: [THREADS=n] docs/experiments/27_two_task_longer.sh DATA19 RUN26 RUN [S1 [S2]]
#   DATA19: 19_two_task_data.sh OUT; RUN26: experiment 26's run root (20_two_task_training.sh RUN)
set -euo pipefail
data="${1:?19_two_task_data.sh output root (holds pick_place_bowl/ and push_to_zone/)}"
init_run="${2:?experiment 26 run root}"
run="${3:?run root}"
s1="${4:-14000}"
s2="${5:-2000}"
[ -d "$init_run/stage2/final" ] || { echo "27_two_task_longer.sh: error: $init_run/stage2/final is missing (20_two_task_training.sh)" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
INIT="$init_run/stage2/final" STAGE1_FLAGS="" FLAGS="--instruction-variants --data $data/push_to_zone" \
  exec "$here/14_train_randomised.sh" "$data/pick_place_bowl" "$run" "$s1" "$s2"
