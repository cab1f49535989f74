#!/usr/bin/env bash
# Experiment 09 (issue #5): give the action head a direct instruction path. Experiments 04-08's
# policies ignore the instruction (swapping "left"/"right" changes the predicted chunk by < 1e-4),
# so they push the named can the wrong way in ~40 % of episodes. This continues experiment 08's
# 3D policy (whitened instruction embedding) with stage 2 only (the action head is trained in both
# stages; the stage-1 modules stay frozen) and the zero-initialised instruction -> action-query
# map of base.ActionHead (`vla3d train --instruction-to-actions`), then evaluates it nominal.
# Resumable: rerun the same command; finished parts are skipped.
# Usage: [THREADS=n] [TASK=name] docs/experiments/09_instruction_to_actions.sh DATA PREV_RUN RUN [S2 [EPISODES [LR [SUITES]]]]
set -euo pipefail
data="${1:?episode directory of one task (the data of experiments 04-08)}"
prev="${2:?experiment 08 run root (INIT_FROM=stage2 STAGE1_FLAGS=--whiten-instructions 05_continue_3d_training.sh ... RUN)}"
root="${3:?run root}"
s2="${4:-3000}"
episodes="${5:-50}"
lr="${6:-5e-4}"
suites="${7:-nominal}"
task="${TASK:-$(basename "$data")}"
resume_flag() { [ -d "$1" ] && echo --resume || true; }
mkdir -p "$root/eval"
vla3d train --data "$data" --preset cpu --batch-size 8 --seed 0 --lr "$lr" --workers 1 --threads "${THREADS:-1}" \
  --checkpoint-every 50 --log-every 10 --no-progress --steps "$s2" --out "$root/3d/stage2" --stage 2 \
  --init "$prev/3d/stage2/final" --instruction-to-actions $(resume_flag "$root/3d/stage2")
for suite in $suites; do
  out="$root/eval/3d_${suite/:/_}.json"
  [ -f "$out" ] || vla3d eval --checkpoint "$root/3d/stage2/final" --suite "$suite" --episodes "$episodes" \
    --tasks "$task" --workers 2 --strips 1 --label 3d_instruction_to_actions --json "$out"
done
