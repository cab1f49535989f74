#!/usr/bin/env bash
# Experiment 23 (issue 16, the language target): experiment 22 (31 training wordings, whitening
# refitted, the shipped checkpoint continued S1 + S2 steps) plus `--instruction-noise NORM` in both
# stages (vla3d_ros/train/instruction_noise.py): isotropic noise on each sample's sentence embedding,
# the size a new wording adds in the whitened space the policy reads.
# Why: experiment 22's validation failures of the language cell were mostly a degraded push on the
# named side (19 of 25), not the wrong side (3): the request was read, the motion was disturbed by the
# new wording's embedding.
# NORM (default 0.287) is `python docs/experiments/instruction_noise_probe.py OUT/push_to_zone` on the
# 31-wording view (leave-one-wording-out on training wordings only; 0.270 on experiment 18's 11).
# Resumable: rerunning the same command continues.
# Usage: [THREADS=n] docs/experiments/23_instruction_noise.sh DATA OUT INIT [S1 [S2 [NORM]]]
set -euo pipefail
data="${1:?episode directory (experiment 18: OUT18/push_to_zone)}"
out="${2:?output root}"
init="${3:?checkpoint to continue (the shipped one)}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FLAGS="--instruction-noise ${6:-0.287}" "$here/22_more_training_wordings.sh" "$data" "$out" "$init" "${4:-2000}" "${5:-800}"
