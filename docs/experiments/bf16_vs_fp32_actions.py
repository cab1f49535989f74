"""Action chunks of a checkpoint under bf16 autocast vs fp32 on validation episodes (issue 18).

Each validation episode (`vla3d eval --split val --seed 0` seeds) is rolled out with the fp32
policy, exactly as `vla3d eval` runs it; at every re-planning step the same observation also goes
through a bf16 runner (same weights, same sampling noise), and the two chunks are compared:
max and mean |bf16 - fp32| per action dimension, in the action's units and in units of the
checkpoint's action std (its normaliser's: a constant dimension counts in its own units). Closed-loop success under each precision
is `vla3d eval --precision fp32` vs `--precision bf16` on the same seeds.

Usage: python docs/experiments/bf16_vs_fp32_actions.py [CHECKPOINT] [EPISODES=3] [STEPS=20] > OUT.txt
(default checkpoint: the shipped one; `--precision bf16` is forced, native or not.)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from vla3d_ros.evaluate.rollout import (RolloutSettings, default_replan_every, evaluation_seed,
                                        run_evaluation_episode, split_run_seed)
from vla3d_ros.model.base import InstructionEncoder
from vla3d_ros.model.checkpoint import load_checkpoint
from vla3d_ros.model.policy import NumpyPolicy
from vla3d_ros.model.precision import has_native_bf16
from vla3d_ros.sim.env import TabletopEnv

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "vla3d_ros" / "assets" / "checkpoints" / "default"


class _BothGenerators:
    """`run_evaluation_episode` reseeds `runner.generator` per episode: reseed both runners alike."""

    def __init__(self, *runners: NumpyPolicy) -> None:
        self.runners = runners

    def manual_seed(self, seed: int) -> None:
        for runner in self.runners:
            runner.generator.manual_seed(seed)


class PairedRunner:
    """Acts with `reference`; runs `candidate` on the same observation and keeps both chunks."""

    def __init__(self, reference: NumpyPolicy, candidate: NumpyPolicy) -> None:
        self.reference, self.candidate = reference, candidate
        self.config = reference.config
        self.generator = _BothGenerators(reference, candidate)
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []        # (H, A) fp32, (H, A) bf16

    def infer(self, obs):
        out = self.reference.infer(obs)
        self.pairs.append((out["actions"], self.candidate.infer(obs)["actions"]))
        return out


def main() -> None:
    checkpoint = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CHECKPOINT
    episodes = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    policy, meta = load_checkpoint(checkpoint)
    encoder = InstructionEncoder()
    paired = PairedRunner(NumpyPolicy(policy, instruction_encoder=encoder, precision="fp32"),
                          NumpyPolicy(policy, instruction_encoder=encoder, precision="bf16"))
    extra, config = meta.get("extra") or {}, policy.config
    task = (extra.get("tasks") or ["push_to_zone"])[0]
    cameras = tuple(extra.get("camera_names") or ("front", "side", "wrist"))
    step_period = float(meta["step_period"])
    settings = RolloutSettings(replan_every=default_replan_every(step_period), max_steps=steps,
                               image_size=tuple(config.image_size), cameras=cameras)
    env = TabletopEnv(task, image_size=settings.image_size, cameras=cameras)
    run_seed = split_run_seed("val", 0)
    try:
        for index in range(episodes):
            run_evaluation_episode(paired, env, task=task, cell=(), index=index, seed=evaluation_seed(run_seed, index),
                        settings=settings, step_period=step_period)
    finally:
        env.close()
    reference = np.stack([a for a, _ in paired.pairs]).astype(np.float64)     # (F, H, A)
    candidate = np.stack([b for _, b in paired.pairs]).astype(np.float64)
    difference = np.abs(candidate - reference)
    std = policy.normalizer.action_std.double().numpy()       # constant dimensions count in their own units
    names = list(config.action_names)
    per_dim = lambda values: {n: float(v) for n, v in zip(names, values)}  # noqa: E731
    print(json.dumps({
        "checkpoint": str(checkpoint), "task": task, "native_bf16": has_native_bf16("cpu"),
        "episodes": episodes, "episode_seeds": [evaluation_seed(run_seed, i) for i in range(episodes)],
        "frames": len(paired.pairs), "chunk_shape": list(reference.shape[1:]),
        "max_abs_diff": float(difference.max()), "mean_abs_diff": float(difference.mean()),
        "max_abs_diff_per_dim": per_dim(difference.max((0, 1))),
        "mean_abs_diff_per_dim": per_dim(difference.mean((0, 1))),
        "max_diff_in_action_std": float((difference / std).max()),
        "mean_diff_in_action_std": float((difference / std).mean()),
        "first_row_mean_diff_in_action_std": float((difference[:, 0] / std).mean()),
    }, indent=1))


if __name__ == "__main__":
    main()
