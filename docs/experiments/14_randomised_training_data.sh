#!/usr/bin/env bash
# Experiment 14 (issue 16), the data: the randomised training distribution a real user would record.
# LAYOUTS layouts recorded under all 4 goals of push_to_zone (so only the instruction tells the
# demonstrations apart), with every part of the training distribution on
# (`sim.perturbations.TRAINING_PERTURBATIONS`: wide calibrated camera poses / rotations / fields of view,
# light, training-only table textures and colours, random zone colours, robot initial postures), plus
# NOMINAL_LAYOUTS x 4 near-nominal goal variants (camera_train:1) so nominal scenes stay in the mix.
# Base seeds 2 and 3: disjoint from experiments 01 (seed 0) and 10 (seed 1).
# Usage: [WORKERS=n] docs/experiments/14_randomised_training_data.sh OUT [LAYOUTS] [NOMINAL_LAYOUTS]
set -euo pipefail
out="${1:?output root}"
layouts="${2:-150}"
nominal_layouts="${3:-100}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
vla3d gen --task push_to_zone --episodes $((layouts * 4)) --goal-variants 4 --out "$out/randomised/push_to_zone" \
  --perturb camera_wide_train light_train background_train zones_train robot_init_train \
  --seed 2 --workers "${WORKERS:-2}" --report
vla3d gen --task push_to_zone --episodes $((nominal_layouts * 4)) --goal-variants 4 --out "$out/nominal/push_to_zone" \
  --perturb camera_train:1 --seed 3 --workers "${WORKERS:-2}" --report
combined="$out/push_to_zone"
mkdir -p "$combined"
index=0
for episode in "$out"/randomised/push_to_zone/episode_* "$out"/nominal/push_to_zone/episode_*; do
  ln -sfn "$episode" "$combined/$(printf 'episode_%06d' "$index")"
  index=$((index + 1))
done
echo "$combined: $index episodes"
