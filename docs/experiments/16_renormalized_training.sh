#!/usr/bin/env bash
# Experiment 16 (issue 16): experiment 14's data and recipe, continued from experiment 14 (the
# checkpoint shipped in session 7) with --renormalize: states and actions normalised with the
# randomised data's statistics instead of the nominal data's that experiment 14 inherited.
# Why: the nominal data's tool orientation varies by std 0.0006 (qz, qw) and its rotation actions by
# 0.0006-0.0024, so a robot_init start (qz ~ 0.03) reached the proprio encoder 50 std out and the
# recovery rotations were 20-std action targets (robot_init 0/51; stage-1 action loss ~0.5 vs 0.15).
# Usage: [THREADS=n] docs/experiments/16_renormalized_training.sh DATA RUN [S1 [S2]]
#   DATA: 14_randomised_training_data.sh OUT/push_to_zone; INIT defaults to the shipped checkpoint.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STAGE1_FLAGS="--renormalize" exec "$here/14_train_randomised.sh" "$@"
