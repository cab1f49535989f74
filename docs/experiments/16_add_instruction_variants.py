"""Experiment 16b (issue 16): give episodes recorded before `instruction_variants` existed their list.

`vla3d gen` now records, with every episode, the training wordings of its request
(`Task.instruction_variants`: the templates and the task's `training_paraphrases`, never the
held-out paraphrases of the `language` suite). Older episodes lack the list; this script recovers
the request's fields from the recorded instruction (`Task.parse_instruction`) and writes the same
list into each meta.json, so the experiment-14 data can be trained with `--instruction-variants`
without re-recording. Episodes whose instruction matches no template are reported and left alone.

Usage: python docs/experiments/16_add_instruction_variants.py DATA
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from vla3d_ros.data.episodes import list_episodes
from vla3d_ros.sim.tasks import TASKS


def main(root: Path) -> int:
    written, unmatched = 0, []
    for episode in list_episodes(root):
        meta_path = episode / "meta.json"
        meta = json.loads(meta_path.read_text())
        fields = TASKS[meta["task"]].parse_instruction(meta["instruction"])
        if fields is None:
            unmatched.append(str(episode))
            continue
        meta["instruction_variants"] = TASKS[meta["task"]].instruction_variants(fields)
        meta_path.write_text(json.dumps(meta, indent=1))
        written += 1
    print(json.dumps({"episodes_written": written, "unmatched": unmatched}))
    return 0 if not unmatched else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
