#!/usr/bin/env bash
# Issue #5, "steps to reach a given success with and without Spatial Forcing", in the regime the
# shipped checkpoint was trained in: both arms continue experiment 11 (PREV_RUN) with experiment
# 12's recipe (grounding 0.1: S1 stage-1 steps, then S2 stage-2 steps), one arm adding Spatial
# Forcing (`--spatial-forcing ALPHA`) to stage 1 — the stage that trains the visual tokens SF
# aligns (stage 2 freezes them). Closed-loop success (nominal, EPISODES episodes, evaluation run
# seed 0) after stage 1 and every EVERY stage-2 steps; then the curve and the steps each arm needed.
#   NOSF_STAGE1=DIR   reuse an existing stage-1 final of the no-SF recipe (experiment 12's) instead
#                     of training it again (the run is deterministic: same seed, same data)
# Usage: [THREADS=n] docs/experiments/13_spatial_forcing_steps.sh DATA PREV_RUN ROOT [S1 [S2 [EVERY [EPISODES [ALPHA]]]]]
set -euo pipefail
data="${1:?episode directory (the combined push_to_zone of experiment 10)}"
prev="${2:?experiment 11 run root}"
root="${3:?run root}"
s1="${4:-3000}"
s2="${5:-1500}"
every="${6:-250}"
episodes="${7:-50}"
alpha="${8:-0.5}"
common=(--data "$data" --preset cpu --batch-size 8 --seed 0 --lr 3e-4 --workers 1 --threads "${THREADS:-1}"
        --log-every 10 --no-progress)
mkdir -p "$root/eval"
resume_flag() { [ -d "$1" ] && echo --resume || true; }
evaluate() {   # CHECKPOINT LABEL
  local out="$root/eval/$2.json"
  [ -f "$out" ] || vla3d eval --checkpoint "$1" --suite nominal --episodes "$episodes" --tasks push_to_zone \
    --workers 2 --strips 0 --label "$2" --json "$out"
}
stage1() {   # ARM EXTRA_FLAGS...
  local arm="$1"; shift
  [ -d "$root/$arm/stage1/final" ] || vla3d train "${common[@]}" --steps "$s1" --out "$root/$arm/stage1" --stage 1 \
    --init "$prev/3d/stage2/final" --grounding-weight 0.1 --checkpoint-every 50 "$@" $(resume_flag "$root/$arm/stage1")
}
stage2() {   # ARM STAGE1_FINAL
  [ -d "$root/$1/stage2/final" ] || vla3d train "${common[@]}" --steps "$s2" --out "$root/$1/stage2" --stage 2 \
    --init "$2" --checkpoint-every "$every" --keep-checkpoints 1000 $(resume_flag "$root/$1/stage2")
}
nosf_stage1="${NOSF_STAGE1:-$root/nosf/stage1/final}"
[ -n "${NOSF_STAGE1:-}" ] || stage1 nosf
evaluate "$nosf_stage1" "nosf@$s1"
stage1 sf --spatial-forcing "$alpha"
evaluate "$root/sf/stage1/final" "sf@$s1"
stage2 nosf "$nosf_stage1"
stage2 sf "$root/sf/stage1/final"
for step in $(seq "$every" "$every" "$s2"); do
  for arm in nosf sf; do
    checkpoint="$root/$arm/stage2/stage2/checkpoints/$(printf 'step_%06d' "$step")"
    [ "$step" -eq "$s2" ] && checkpoint="$root/$arm/stage2/final"
    evaluate "$checkpoint" "$arm@$((s1 + step))"
  done
done
python docs/experiments/success_vs_steps.py "$root"/eval/*.json --markdown "$root/steps_to_success.md" \
  --plot "$root/success_vs_steps.png"
