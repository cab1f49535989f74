"""Which words of its instruction does a checkpoint act on? (a diagnostic, not a result)

Goal-variant data (`vla3d gen --goal-variants 4`, experiment 10) records every goal of one layout:
same first frame, different instruction, different expert actions. For the first N layouts the
policy predicts the first chunk on the FIRST frame of the layout with each of the 4 instructions,
and both its and the expert's displacement over the chunk (summed dx, dy) are centred per layout.
In push_to_zone, dy carries the zone ("left"/"right": the tool goes behind the can, away from
the zone) and dx mostly the can (the two cans sit in different x bands), so

    gain_y = slope of the policy's centred dy on the expert's    (1: follows the side word, 0: ignores it)
    gain_x = the same for dx                                      (1: follows the colour word, 0: ignores it)

over all layouts (least squares through the origin), plus the fraction of variants whose centred
displacement points the same way as the expert's (0.5 = a coin). For a checkpoint with a reasoning
anchor (METHOD §8) it also reports how often the anchor's predicted centroid lies nearer the
instructed can's pseudo-label than the other can's (0.5 = a coin; needs the label caches that
`vla3d train` builds in each episode) and, with grounding, how often its top-scored visual token
lies on the instructed can rather than another object.

Usage: python docs/experiments/goal_variant_probe.py GOAL_VARIANT_DATA CHECKPOINT [CHECKPOINT ...] [--layouts N]
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from vla3d_ros.data.episodes import EpisodeReader, list_episodes
from vla3d_ros import types
from vla3d_ros.data.dataset import DatasetConfig, LabelCache, build_label_cache
from vla3d_ros.model.checkpoint import load_checkpoint
from vla3d_ros.model.policy import NumpyPolicy
from vla3d_ros.model.reasoning_anchor import grounding_target, instructed_object_row


def layouts(data: Path, count: int) -> list[list[EpisodeReader]]:
    """The first `count` complete layouts: episodes grouped by seed, all 4 goals present."""
    groups: dict[int, list[EpisodeReader]] = {}
    for path in list_episodes(data):
        reader = EpisodeReader(path)
        if "goal_variant" in reader.meta:
            groups.setdefault(int(reader.meta["seed"]), []).append(reader)
    complete = [group for group in groups.values() if len(group) == 4]
    if not complete:
        raise SystemExit(f"{data} has no complete goal-variant layouts (vla3d gen --goal-variants 4)")
    return complete[:count]


def displacement(chunk: np.ndarray) -> np.ndarray:
    """(H, A) chunk of EE deltas -> (2,) summed dx, dy."""
    return chunk[:, :2].sum(axis=0)


def anchor_picks_the_named_object(runner: NumpyPolicy, group: list[EpisodeReader]) -> tuple[list[bool], list[bool]]:
    """Per goal: is the anchor's centroid nearer the instructed object's label than any other's?
    And, with grounding, does its top-scored visual token hold more of the instructed object's
    mask than of any other object's? (second list empty without grounding)"""
    policy = runner.policy
    first = group[0].observation(0)
    # Layouts never trained on have no pseudo-label cache yet: build it as training would.
    cache = build_label_cache(group[0].episode_dir, DatasetConfig.from_policy_config(policy.config))
    labels = LabelCache(cache).targets(0, 16)
    valid = labels[types.TARGET_VALID]
    centroids = labels[types.TARGET_CENTROIDS][valid]                                      # (objects, 3)
    masks = torch.as_tensor(labels[types.TARGET_MASKS][valid])[None]                       # (1, objects, V, Hm, Wm)
    covers = torch.stack([grounding_target(masks, torch.tensor([row]), policy.config.grid_hw)[0][0]
                          for row in range(len(centroids))])                               # (objects, N)
    fact_picks, grounding_picks = [], []
    for reader in group:
        batch = runner.batch_from_observation(dataclasses.replace(first, instruction=reader.meta["instruction"]))
        with torch.inference_mode():
            context, context_pad, _ = policy._context(batch)
            anchored = policy.action_head.reasoning_anchor(policy._action_instruction(batch), context, context_pad,
                                                           policy.grounding_inputs(batch))
        row = instructed_object_row(reader.meta["instruction"], reader.meta["object_ids"])
        distances = np.linalg.norm(centroids - anchored.fact[0].numpy(), axis=1)
        fact_picks.append(int(np.argmin(distances)) == row)
        if anchored.grounding is not None:
            grounding_picks.append(int(covers[:, int(anchored.grounding[0].argmax())].argmax()) == row)
    return fact_picks, grounding_picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--layouts", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    groups = layouts(args.data, args.layouts)
    print(f"{len(groups)} layouts x 4 goals, first frame of each layout")
    print("| checkpoint | gain_x (colour) | gain_y (side) | x same direction | y same direction "
          "| anchor picks the named can | grounding picks the named can |")
    print("|---|---|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        policy, _ = load_checkpoint(checkpoint)
        runner = NumpyPolicy(policy)
        horizon = policy.config.horizon
        expert, predicted, picks, grounded = [], [], [], []
        for group in groups:
            if policy.action_head.reasoning_anchor is not None:
                fact_picks, grounding_picks = anchor_picks_the_named_object(runner, group)
                picks += fact_picks
                grounded += grounding_picks
            first = group[0].observation(0)
            moves_expert = np.stack([displacement(reader.actions()[:horizon]) for reader in group])
            moves_policy = np.stack([displacement(runner.infer(dataclasses.replace(
                first, instruction=reader.meta["instruction"]))["actions"]) for reader in group])
            expert.append(moves_expert - moves_expert.mean(axis=0))
            predicted.append(moves_policy - moves_policy.mean(axis=0))
        e, p = np.concatenate(expert), np.concatenate(predicted)      # (4L, 2) centred per layout
        gain = (e * p).sum(axis=0) / (e * e).sum(axis=0)
        agree = (np.sign(e) == np.sign(p)).mean(axis=0)
        anchor, grounding = (f"{np.mean(x):.2f}" if x else "–" for x in (picks, grounded))
        print(f"| {checkpoint} | {gain[0]:.2f} | {gain[1]:.2f} | {agree[0]:.2f} | {agree[1]:.2f} | {anchor} | {grounding} |")


if __name__ == "__main__":
    main()
