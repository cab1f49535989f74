"""Closed-loop success of a checkpoint on its own TRAINING layouts (a diagnostic, not a result).

`vla3d eval` refuses training seeds on purpose. This script replays the first N training
episodes' seeds and perturbations (read from their meta.json) through the same rollout worker,
so one can tell underfitting (fails even on layouts it was trained on) from a generalisation gap.

Usage: python docs/experiments/train_layout_rollouts.py CHECKPOINT EPISODE_DIR [N=12] > OUT.txt
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from vla3d_ros.evaluate.rollout import EpisodeJob, RolloutSettings, RolloutWorker


def main() -> None:
    checkpoint, data = Path(sys.argv[1]), Path(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 12
    episodes = sorted(path for path in data.iterdir() if path.name.startswith("episode_"))[:count]
    worker = RolloutWorker(checkpoint, RolloutSettings(), threads=1)
    successes = 0
    try:
        for index, episode in enumerate(episodes):
            meta = json.loads((episode / "meta.json").read_text())
            outcome = worker.run(EpisodeJob(meta["task"], tuple(meta["perturbations"]), index, meta["seed"], False))
            successes += outcome.success
            print(f"{episode.name} seed {meta['seed']} | {meta['instruction']} | "
                  f"{'success' if outcome.success else 'failure'} in {outcome.steps} steps", flush=True)
    finally:
        worker.close()
    print(f"training layouts solved: {successes}/{len(episodes)} ({checkpoint})")


if __name__ == "__main__":
    main()
