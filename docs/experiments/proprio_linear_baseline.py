"""How much of the expert's actions proprioception alone explains (docs/results.md, "Reading").

Least squares from the state the policy sees (joints, end-effector pose, gripper; no images) to
the next action, fitted on the first 48 episodes of a task, scored on the other 12 as the mean
absolute error per action dimension in the policy's normalised units (z-scores of the training
actions; a constant dimension scores 0). Usage:
    python docs/experiments/proprio_linear_baseline.py DATA/push_to_zone
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

FIT_EPISODES = 48


def main(task_dir: str) -> None:
    states, actions, episode = [], [], []
    for index, path in enumerate(sorted(Path(task_dir).glob("episode_*"))):
        action = np.load(path / "actions.npy", allow_pickle=False)
        gripper = np.load(path / "gripper.npy", allow_pickle=False).reshape(len(action), -1)
        states.append(np.concatenate([np.load(path / "joint_positions.npy", allow_pickle=False),
                                      np.load(path / "ee_pose.npy", allow_pickle=False), gripper], 1))
        actions.append(action)
        episode += [index] * len(action)
    state, action, episode = np.concatenate(states), np.concatenate(actions), np.asarray(episode)
    fit = episode < FIT_EPISODES
    std = action[fit].std(0)
    z = (action - action[fit].mean(0)) / np.where(std < 1e-6, 1.0, std)
    design = np.concatenate([state, np.ones((len(state), 1))], 1)
    weights, *_ = np.linalg.lstsq(design[fit], z[fit], rcond=None)
    per_dim = np.abs(design[~fit] @ weights - z[~fit]).mean(0).astype(float)
    median = np.abs(z[~fit] - np.median(z[fit], 0)).mean(0).astype(float)
    print(f"{fit.sum()} fit / {(~fit).sum()} held-out frames")
    print("per-dim L1, constant (median) predictor:", np.round(median, 3).tolist(), f"mean {median.mean():.3f}")
    print("per-dim L1, linear in proprioception:   ", np.round(per_dim, 3).tolist(), f"mean {per_dim.mean():.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
