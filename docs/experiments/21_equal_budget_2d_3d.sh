#!/usr/bin/env bash
# Experiment 21 (issue 16, item 4): the paper's question at equal budget on the data a user would
# record (experiment 18's: 1,000 randomised + 200 near-nominal push_to_zone demonstrations). Both
# policies start from scratch and get the same optimiser steps, batch, seed, learning rates and
# schedule, in three phases (each its own cosine), the language path of the shipped recipe
# (instruction whitening, FiLM, a direct instruction path, training paraphrases) in both:
#   phase A: A steps from scratch, lr 1e-3;
#   phase B: B steps from A's final, lr 3e-4;
#   phase C: C steps from B's final, lr 3e-4.
#   3D: A = stage 1 with the reasoning anchor; B = stage 1 + the object grounding (fitted first on
#       A's frozen tokens, as the shipped checkpoint's was: `train/extensions/grounding.py`);
#       C = stage 2 (METHOD §6).
#   2D: every 3D component off (fusion, instances, completion, aggregation) and neither the anchor
#       nor the grounding, which read 3D points (the grounding's point is depth back-projected
#       through the calibration): one stage, the same A / B / C phases.
# ABLATION=list trains the 3D recipe with `--disable list` in phase A into RUN/3d_no_<list>. The
# components depend on each other (model/config.py: fusion needs instances, completion needs fusion,
# aggregation's routing needs completion), so the ablations are: "aggregation" (no end-effector
# relative encoding, no routing), "completion,aggregation", "fusion,completion,aggregation"
# (instance tokens from per-view features only) and "fusion,instances,completion,aggregation" with
# the anchor + grounding (the 3D point of the named object is all the 3D left).
# The architecture is fixed in phase A (`--disable` cannot be combined with `--init`).
# Resumable: rerun the same command; finished phases are skipped.
# PRESET=tiny with a few steps is a smoke run of the whole script.
# Usage: [THREADS=n] [PRESET=name] [ONLY=3d|2d] [ABLATION=...] docs/experiments/21_equal_budget_2d_3d.sh DATA RUN [A [B [C]]]
set -euo pipefail
data="${1:?episode directory (experiment 18: OUT/push_to_zone)}"
root="${2:?run root}"
a="${3:-3000}"
b="${4:-1500}"
c="${5:-1500}"
common=(--data "$data" --preset "${PRESET:-cpu}" --batch-size 8 --seed 0 --workers 1 --threads "${THREADS:-2}"
        --checkpoint-every 100 --log-every 10 --no-progress --precision auto --instruction-variants)
language=(--whiten-instructions --instruction-film)
train() {  # out, then flags
  local out="$1"; shift
  if [ -d "$out/final" ]; then return; fi
  local resume=(); [ -f "$out/run.json" ] && resume=(--resume)
  vla3d train "${common[@]}" --out "$out" "$@" "${resume[@]}"
}
three_d() {  # out, disable list (may be empty)
  local out="$1" disable=()
  [ -n "$2" ] && disable=(--disable "$2")
  train "$out/a" --stage 1 --steps "$a" --lr 1e-3 "${language[@]}" --reasoning-anchor --anchor-weight 0.02 "${disable[@]}"
  train "$out/b" --stage 1 --steps "$b" --lr 3e-4 --init "$out/a/final" --grounding-weight 0.1
  train "$out/c" --stage 2 --steps "$c" --lr 3e-4 --init "$out/b/final"
}
if [ -n "${ABLATION:-}" ]; then
  three_d "$root/3d_no_${ABLATION//,/_}" "$ABLATION"
  exit 0
fi
if [ "${ONLY:-3d}" != 2d ]; then
  three_d "$root/3d" ""
fi
if [ "${ONLY:-2d}" != 3d ]; then
  flat=(--disable fusion,instances,completion,aggregation)
  train "$root/2d/a" --stage 1 --steps "$a" --lr 1e-3 "${language[@]}" --instruction-to-actions "${flat[@]}"
  train "$root/2d/b" --stage 1 --steps "$b" --lr 3e-4 --init "$root/2d/a/final"
  train "$root/2d/c" --stage 1 --steps "$c" --lr 3e-4 --init "$root/2d/b/final"
fi
