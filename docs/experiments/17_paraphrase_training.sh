#!/usr/bin/env bash
# Experiment 17 (issue 16): experiment 16 continued on the same data with --instruction-variants:
# every step is paired with one of its episode's training wordings (3 templates + 8 training
# paraphrases for push_to_zone, `Task.training_paraphrases`; the language suite's held-out
# paraphrases are never among them, tested), instead of the recorded template only.
# Why: experiment 14 on the language suite: 35 % (val) / 47 % (test) against 86 % / 76 % nominal,
# with 3 templates' embeddings to learn the goal from.
# Data recorded before instruction_variants existed gets them with 16_add_instruction_variants.py.
# Usage: [THREADS=n] [INIT=ckpt] docs/experiments/17_paraphrase_training.sh DATA RUN [S1 [S2]]
#   INIT (required): experiment 16's final checkpoint, RUN16/stage2/final.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
INIT="${INIT:?experiment 16 final checkpoint}" FLAGS="--instruction-variants" exec "$here/14_train_randomised.sh" "$@"
