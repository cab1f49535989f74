#!/usr/bin/env bash
# Experiment 15 (issue 16): the generalisation table of one checkpoint on one split.
# Cells pooled as the issue's targets are: nominal; viewpoint = camera_pose + camera_rotation +
# camera_fov, levels 1-3; appearance = light + background, levels 1-3; language 1-3; robot_init 1-3.
# Episodes per (perturbation, level) are chosen so every pooled cell has >= 50 episodes.
# Choices are made on --split val; --split test only for the checkpoint about to ship.
# SEED: the evaluation run seed within the split (default 0); pool several for a choice.
# TASKS: the tasks to run (default: every task the checkpoint was trained on); the episode counts
# hold per task, and the table has one block per task.
# EVAL_FLAGS: more `vla3d eval` flags (e.g. --no-instruction-retrieval, to compare with evaluations
# made before retrieval existed).
# Usage: [WORKERS=n] [SEED=k] [TASKS="a b"] [EVAL_FLAGS=...] docs/experiments/15_generalisation_eval.sh CHECKPOINT SPLIT OUT_DIR [LABEL]
set -euo pipefail
checkpoint="${1:?checkpoint directory}"
split="${2:?val or test}"
out="${3:?output directory}"
label="${4:-$(basename "$(dirname "$checkpoint")")}"
mkdir -p "$out"
# suite:episodes per level
for cell in nominal:50 viewpoint:6 appearance:9 language:17 robot_init:17; do
  suite="${cell%%:*}"
  episodes="${cell##*:}"
  json="$out/${suite}.json"
  [ -f "$json" ] || vla3d eval --checkpoint "$checkpoint" --split "$split" --seed "${SEED:-0}" --suite "$suite" --episodes "$episodes" \
    --workers "${WORKERS:-2}" --strips 1 --label "$label" --json "$json" ${TASKS:+--tasks $TASKS} ${EVAL_FLAGS:-}
done
python "$(dirname "${BASH_SOURCE[0]}")/generalisation_table.py" "$out"/*.json
