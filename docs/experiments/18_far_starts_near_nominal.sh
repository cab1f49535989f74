#!/usr/bin/env bash
# Experiment 18 (issue 16), a probe on validation: does robot_init fail because far start postures were
# only ever recorded in randomised scenes? (Experiment 17 fails robot_init as often at 0.08 rad as at
# 0.25 rad, and every near-nominal demonstration starts at home.) Records NEAR near-nominal
# demonstrations (camera_train:1) with robot_init_train (far starts in half of them), adds them to
# experiment 14's data and continues experiment 17 on the union with its recipe.
# Usage: [WORKERS=n] [THREADS=n] docs/experiments/18_far_starts_near_nominal.sh DATA14 OUT RUN17_FINAL [NEAR [S1 [S2]]]
set -euo pipefail
data14="${1:?experiment 14 data root (holds push_to_zone/)}"
out="${2:?output root}"
init="${3:?experiment 17 final checkpoint}"
near="${4:-200}"
s1="${5:-2000}"
s2="${6:-800}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
vla3d gen --task push_to_zone --episodes "$near" --goal-variants 4 --out "$out/near_far_starts/push_to_zone" \
  --perturb camera_train:1 robot_init_train --seed 4 --workers "${WORKERS:-2}" --report
combined="$out/push_to_zone"
mkdir -p "$combined"
index=0
for episode in "$data14"/push_to_zone/episode_* "$out"/near_far_starts/push_to_zone/episode_*; do
  ln -sfn "$(readlink -f "$episode")" "$combined/$(printf 'episode_%06d' "$index")"
  index=$((index + 1))
done
INIT="$init" FLAGS="--instruction-variants" "$here/14_train_randomised.sh" "$combined" "$out/run" "$s1" "$s2"
