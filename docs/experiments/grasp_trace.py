"""Session 14 (issue 16, item 5): why pick_place_bowl's nominal episodes fail — a trace of the grasp.

Rolls out validation episodes of one task (nominal scene, the evaluation's execution settings) and
prints, every 4 control steps, the tool's height, its xy distance from the named object's axis,
the gripper opening and command, the object's height and how far it has moved, and whether a
finger touches it. The episodes are chosen by seed from an evaluation JSON (`vla3d eval --json`):
its `episodes[].seed`.

Found with it (experiment 30, validation run seed 0): the can goal fails when the tool comes down
1.2-2.5 cm off the can's axis; the fingers close on its edge, it rises a few mm and slips out, and
the policy carries the empty hand on to the bowl (no demonstration re-grasps). Successful can
grasps come down within 0.3-0.8 cm.

Usage: python docs/experiments/grasp_trace.py CHECKPOINT TASK SEED[,SEED...] [--precision fp32|bf16]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vla3d_ros.evaluate.rollout import EpisodeJob, RolloutSettings, RolloutWorker

TRACE_EVERY = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("task")
    parser.add_argument("seeds", help="comma-separated episode seeds (an evaluation JSON's episodes[].seed)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                        help="the policy forward's precision (the evaluation's `--precision auto` resolved)")
    args = parser.parse_args()
    worker = RolloutWorker(args.checkpoint, RolloutSettings(precision=args.precision), threads=1)
    nominal = ()
    env = worker._env(args.task, nominal)   # the worker's own env, so the rollout is the evaluation's
    env_step = env.step
    rows: list[tuple] = []

    def traced_step(action):
        obs = env_step(action)
        target = env.instance.roles["target"]
        rows.append((obs.ee_pose[:3].copy(), obs.gripper, float(action[-1]), env.object_position(target),
                     env.gripper_touches(target)))
        return obs

    env.step = traced_step
    for seed in (int(text) for text in args.seeds.split(",")):
        rows.clear()
        outcome = worker.run(EpisodeJob(args.task, nominal, 0, seed, False))
        print(f"seed {seed}: {'success' if outcome.success else 'failure'} after {outcome.steps} steps, "
              f"{outcome.instruction!r}")
        start = rows[0][3]
        for step, (tool, opening, command, target, touching) in enumerate(rows):
            if step % TRACE_EVERY and step != len(rows) - 1:
                continue
            offset = tool - target
            print(f"  step {step:2d}: tool z {tool[2]:.3f} m, {100 * np.linalg.norm(offset[:2]):4.1f} cm from the "
                  f"object's axis | gripper {opening:.2f} (command {command:.2f}) | object z {target[2]:.3f} m, "
                  f"moved {100 * np.linalg.norm(target[:2] - start[:2]):4.1f} cm | touching {touching}")
    worker.close()


if __name__ == "__main__":
    main()
