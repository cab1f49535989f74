#!/usr/bin/env bash
# Experiment 22 (issue 16, the language target): 31 training wordings per request instead of 11
# (`PushToZone.training_paraphrases` gained 20 in session 9), the instruction whitening fitted again
# on them (`--refit-whitening`), and the shipped checkpoint continued with experiment 17's recipe.
# The probe that asked for it (a linear read-out of the side word from the frozen sentence
# embedding, held-out paraphrase levels 1-3: 98 / 83 / 95 % from 11 wordings, 100 / 100 / 100 % from
# 31) is in docs/results.md, session 9.
# DATA's episodes are not modified: OUT/push_to_zone holds one directory per episode whose files
# link to DATA's, except meta.json, a copy that 16_add_instruction_variants.py rewrites with the
# current wordings.
# FLAGS: more `vla3d train` flags for both stages (experiment 23: --instruction-noise).
# Usage: [THREADS=n] [FLAGS=...] docs/experiments/22_more_training_wordings.sh DATA OUT INIT [S1 [S2]]
set -euo pipefail
data="${1:?episode directory (experiment 18: OUT18/push_to_zone)}"
out="${2:?output root}"
init="${3:?checkpoint to continue (the shipped one)}"
s1="${4:-2000}"
s2="${5:-800}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
view="$out/push_to_zone"
if [ ! -f "$out/variants.json" ]; then
  mkdir -p "$view"
  for episode in "$data"/episode_*; do
    target="$view/$(basename "$episode")"
    mkdir -p "$target"
    for file in "$(readlink -f "$episode")"/*; do
      [ "$(basename "$file")" = meta.json ] && cp "$file" "$target/meta.json" || ln -sfn "$file" "$target/"
    done
  done
  python "$here/16_add_instruction_variants.py" "$view" > "$out/variants.json"
fi
INIT="$init" FLAGS="--instruction-variants ${FLAGS:-}" STAGE1_FLAGS="--refit-whitening" \
  "$here/14_train_randomised.sh" "$view" "$out/run" "$s1" "$s2"
