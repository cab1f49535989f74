"""Experiment 24 (issue 16, language): record in a checkpoint the instructions it trained on, for a
checkpoint saved before training recorded them (`vla3d train` now writes them to config.json
"extra" -> "training_instructions"). The weights are not touched; instruction retrieval
(`model/instruction_retrieval.py`) needs the list.

The instructions are those the training runs paired steps with: each episode's recorded request and,
with --variants (runs trained with `--instruction-variants`), its `instruction_variants`. Give every
data root of the checkpoint's training chain (experiments 18 and 22 linked their init's episodes
into their own data root, so their root is enough).

Usage: python docs/experiments/24_training_instructions.py CHECKPOINT OUT --data ROOT [ROOT ...] [--variants]
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from vla3d_ros.data.dataset import episode_instructions
from vla3d_ros.data.episodes import EpisodeReader, list_episodes
from vla3d_ros.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_checkpoint_meta
from vla3d_ros.model.instruction_retrieval import TRAINING_INSTRUCTIONS_KEY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--variants", action="store_true")
    args = parser.parse_args()
    meta = read_checkpoint_meta(args.checkpoint)
    texts = sorted({text for root in args.data for episode in list_episodes(root)
                    for text in episode_instructions(EpisodeReader(episode).meta, args.variants)})
    if not texts:
        raise SystemExit(f"no episodes under {args.data}")
    meta["extra"][TRAINING_INSTRUCTIONS_KEY] = texts
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.checkpoint / WEIGHTS_FILE, args.out / WEIGHTS_FILE)
    (args.out / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    print(json.dumps({"training_instructions": len(texts), "out": str(args.out)}))


if __name__ == "__main__":
    main()
