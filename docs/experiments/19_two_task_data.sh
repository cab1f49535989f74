#!/usr/bin/env bash
# Experiment 19 (issue 16, item 5), the data: pick_place_bowl demonstrations recorded the way
# push_to_zone's were (experiments 14 and 18), beside existing push_to_zone data, for one policy
# of both tasks (20_two_task_training.sh).
#   randomised: LAYOUTS layouts under all 3 goals (which of the two cubes and the can goes into the
#     bowl), with the training distribution on (camera_wide_train light_train background_train
#     robot_init_train; zones_train changes nothing in a task without zones);
#   nominal: NOMINAL_LAYOUTS x 3 near-nominal goal variants (camera_train:1), as experiment 14;
#   near far starts: NEAR near-nominal demonstrations with robot_init_train, as experiment 18.
# Base seeds 5, 6, 7: push_to_zone's data used 0-4, and a shared base seed would give the two
# tasks' episodes the same camera / light / start-posture draws pairwise.
# The defaults give ~960 episodes of ~50 steps, about as many samples as push_to_zone's 1,200 of ~40.
# OUT/pick_place_bowl: the pick_place_bowl episodes (links); OUT/push_to_zone: a link to PUSH_DATA.
# Resumable: rerunning the same command skips the episodes already written.
# GEN_FLAGS: extra `vla3d gen` flags (the smoke test records small images: --image-size 32 32).
# Usage: [WORKERS=n] [GEN_FLAGS=...] docs/experiments/19_two_task_data.sh PUSH_DATA OUT [LAYOUTS [NOMINAL_LAYOUTS [NEAR]]]
#   PUSH_DATA: an episode directory of push_to_zone (e.g. experiment 18's OUT/push_to_zone)
set -euo pipefail
push="${1:?push_to_zone episode directory (e.g. experiment 18 OUT/push_to_zone)}"
out="${2:?output root}"
layouts="${3:-150}"
nominal_layouts="${4:-100}"
near="${5:-210}"
[ -d "$push" ] || { echo "19_two_task_data.sh: error: $push is not a directory" >&2; exit 2; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"
task=pick_place_bowl
gen() { vla3d gen --task "$task" --goal-variants 3 --workers "${WORKERS:-2}" --report ${GEN_FLAGS:-} "$@"; }
gen --episodes $((layouts * 3)) --out "$out/randomised/$task" --seed 5 \
  --perturb camera_wide_train light_train background_train robot_init_train
gen --episodes $((nominal_layouts * 3)) --out "$out/nominal/$task" --seed 6 --perturb camera_train:1
gen --episodes "$near" --out "$out/near_far_starts/$task" --seed 7 --perturb camera_train:1 robot_init_train
combined="$out/$task"
mkdir -p "$combined"
index=0
for episode in "$out"/randomised/$task/episode_* "$out"/nominal/$task/episode_* "$out"/near_far_starts/$task/episode_*; do
  ln -sfn "$episode" "$combined/$(printf 'episode_%06d' "$index")"
  index=$((index + 1))
done
link="$out/push_to_zone"
if [ "$(readlink -f "$link")" != "$(readlink -f "$push")" ]; then
  [ ! -e "$link" ] || [ -L "$link" ] || { echo "19_two_task_data.sh: error: $link exists and is not $push" >&2; exit 2; }
  ln -sfn "$(readlink -f "$push")" "$link"
fi
echo "$combined: $index episodes; $link -> $(readlink -f "$link")"
