"""How push_to_zone episodes fail, from `vla3d eval` JSONs (a diagnostic, not a result).

Every episode record carries the instruction and the final end-effector position. A push in the
instructed direction ends with the tool on that side of the table (successes end at |y| ~ 0.18-0.25,
with the can in the zone at |y| = 0.3): "left" is +y, "right" is -y in the base frame. Classes:
  success       the task's own detector said so
  wrong side    the tool ended beyond SIDE_MARGIN on the side opposite to the instructed one
  right side    it ended beyond SIDE_MARGIN on the instructed side, yet failed (tipped can,
                overshoot, pushed past the can)
  no push       it stayed between the two (did not push, or hovered)
and, for evaluations that record each object's displacement (session 5 on), first of the failures:
  wrong can     the instructed can moved < MOVED m while another moved more: the colour was misread

Usage: python docs/experiments/push_failure_modes.py EVAL.json [EVAL.json ...] > OUT.md
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

SIDE_MARGIN = 0.15   # m; can starts at |y| <= 0.1, the zones begin at |y| = 0.22
MOVED = 0.03         # m of xy travel that counts as "pushed" (a can is 6 cm across)
CLASSES = ("success", "wrong can", "wrong side", "right side", "no push")


def failure_mode(episode: dict) -> str:
    if episode["success"]:
        return "success"
    moved = episode.get("object_displacement", {})
    if moved and moved["target"] < MOVED and max(v for k, v in moved.items() if k != "target") >= MOVED:
        return "wrong can"
    instruction = episode["instruction"]
    if ("left" in instruction) == ("right" in instruction):
        raise ValueError(f"instruction names no single side: {instruction!r}")
    toward = (1.0 if "left" in instruction else -1.0) * float(episode["final_ee_position"][1])
    if toward < -SIDE_MARGIN:
        return "wrong side"
    return "right side" if toward > SIDE_MARGIN else "no push"


def main(paths: list[str]) -> None:
    print("| eval | " + " | ".join(CLASSES) + " |")
    print("|---|" + "---|" * len(CLASSES))
    for path in paths:
        document = json.loads(Path(path).read_text())
        counts = dict.fromkeys(CLASSES, 0)
        for episode in document["episodes"]:
            counts[failure_mode(episode)] += 1
        if not all("object_displacement" in episode for episode in document["episodes"]):
            counts["wrong can"] = "–"     # recorded from session 5 on; earlier evals cannot tell
        name = f"{document['label']} {document['suite']} (seed {document['run_seed']})"
        print(f"| {name} | " + " | ".join(str(counts[c]) for c in CLASSES) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
