"""Does a checkpoint listen to its instruction? (a diagnostic, not a result)

For the first N training episodes of a push_to_zone data directory and a few time steps each,
the policy predicts the action chunk twice on the SAME observation: with the episode's own
instruction and with "left" and "right" swapped. It prints the mean absolute difference of the
two chunks in normalised action units (over the dimensions the demonstrations move) (the units of the training loss) and the mean summed dy
(metres over the chunk) of each, so a policy that ignores the side word shows ~0 difference.

Usage: python docs/experiments/instruction_swap_probe.py DATA CHECKPOINT [CHECKPOINT ...] [--episodes N]
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from vla3d_ros.data.episodes import EpisodeReader, list_episodes
from vla3d_ros.model.checkpoint import load_checkpoint
from vla3d_ros.model.policy import NumpyPolicy

TIME_STEPS = (0, 4, 8)   # before and during the approach: where the side must come from the text


def swapped(instruction: str) -> str:
    return instruction.replace("left", "\0").replace("right", "left").replace("\0", "right")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--episodes", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    episodes = list_episodes(args.data)[:args.episodes]
    print("| checkpoint | mean abs chunk difference (normalised) | summed dy toward the instructed zone: own -> swapped instruction (m) |")
    print("|---|---|---|")
    for checkpoint in args.checkpoints:
        policy, _ = load_checkpoint(checkpoint)
        runner = NumpyPolicy(policy)
        std = policy.normalizer.stats.action_std
        moving = std > 1e-8          # action dimensions the demonstrations never move have std 0
        differences, dy_own, dy_swapped = [], [], []
        for episode in episodes:
            reader = EpisodeReader(episode)
            for t in TIME_STEPS:
                obs = reader.observation(t)
                own = runner.infer(obs)["actions"]
                other = runner.infer(dataclasses.replace(obs, instruction=swapped(obs.instruction)))["actions"]
                differences.append(np.abs((own - other)[:, moving] / std[moving]).mean())
                sign = 1.0 if "left" in obs.instruction else -1.0    # + = toward the instructed zone
                dy_own.append(sign * own[:, 1].sum())
                dy_swapped.append(sign * other[:, 1].sum())
        print(f"| {checkpoint} | {np.mean(differences):.2e} | {np.mean(dy_own):+.4f} -> {np.mean(dy_swapped):+.4f} |")


if __name__ == "__main__":
    main()
