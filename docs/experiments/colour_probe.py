"""Do a checkpoint's visual features encode the colour of the objects? (a diagnostic, not a result)

Session 5 found that no policy follows the colour word of push_to_zone's instruction. This asks
whether the colour is even there to be read: for the first frame of N episodes, every object's
pseudo-label mask (the label cache `vla3d train` builds) is pooled over (a) the raw RGB pixels
(the control: colour is in the image), (b) the vision backbone's features and (c) the trunk's
output tokens, all views whose mask is non-empty averaged. A ridge-regression classifier to the
object's colour name is fitted on the first 2/3 of the episodes and scored on the rest.
Chance = 1 / number of colours.

Usage: python docs/experiments/colour_probe.py DATA CHECKPOINT [--episodes N]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vla3d_ros import types
from vla3d_ros.data.dataset import LABEL_CACHE_DIR, LabelCache
from vla3d_ros.data.episodes import EpisodeReader, list_episodes
from vla3d_ros.model.checkpoint import load_checkpoint
from vla3d_ros.model.policy import NumpyPolicy


def pooled(maps: torch.Tensor, masks: np.ndarray) -> np.ndarray:
    """maps (V, C, h, w), masks (T, V, H, W) bool -> (T, C): mean over each object's mask pixels
    (masks resized to the map grid), averaged over the views that see it."""
    grid = F.interpolate(torch.as_tensor(masks, dtype=torch.float32), size=maps.shape[-2:], mode="area")  # (T, V, h, w)
    weights = grid / grid.sum(dim=(-2, -1), keepdim=True).clamp(min=1e-6)
    per_view = torch.einsum("tvhw,vchw->tvc", weights, maps.float())                      # (T, V, C)
    seen = (grid.sum(dim=(-2, -1)) > 0).float()                                           # (T, V)
    return ((per_view * seen[..., None]).sum(1) / seen.sum(1, keepdim=True).clamp(min=1)).numpy()


def ridge_accuracy(features: np.ndarray, labels: np.ndarray, split: int, alpha: float = 1e-2) -> float:
    mean, std = features[:split].mean(0), features[:split].std(0) + 1e-6
    x = np.c_[(features - mean) / std, np.ones(len(features))]
    classes = np.unique(labels)
    onehot = (labels[:, None] == classes[None]).astype(np.float64)
    a = x[:split]
    weights = np.linalg.solve(a.T @ a + alpha * len(a) * np.eye(a.shape[1]), a.T @ onehot[:split])
    return float((classes[(x[split:] @ weights).argmax(1)] == labels[split:]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--episodes", type=int, default=150)
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy, _ = load_checkpoint(args.checkpoint)
    runner = NumpyPolicy(policy)
    features: dict[str, list[np.ndarray]] = {"raw RGB": [], "vision backbone": [], "trunk tokens": []}
    names, episode_of = [], []
    for episode, path in enumerate(list_episodes(args.data)[:args.episodes]):
        reader = EpisodeReader(path)
        cache = path / LABEL_CACHE_DIR
        if not cache.is_dir():
            raise SystemExit(f"{path} has no label cache: train on this data once (vla3d train builds it)")
        labels = LabelCache(cache).targets(0, 16)
        valid = labels[types.TARGET_VALID]
        if int(valid.sum()) != len(reader.meta["object_ids"]):
            continue                                    # an object unlabelled here: rows would not match names
        masks = labels[types.TARGET_MASKS][valid]                                             # (T, V, H, W)
        by_id = sorted(reader.meta["object_ids"].items(), key=lambda item: item[1])
        obs = reader.observation(0)
        batch = runner.batch_from_observation(obs)
        with torch.inference_mode():
            maps = policy.vision(batch[types.RGB], policy.dtype)[0]                           # (V, C, h, w)
            tokens, _ = policy.trunk(maps[None], batch[types.INSTRUCTION_EMBEDDING].to(policy.dtype))
        grid = maps.shape[-2:]
        trunk_maps = tokens[0, 1:].reshape(maps.shape[0], grid[0], grid[1], -1).permute(0, 3, 1, 2)
        rgb = torch.as_tensor(obs.rgb).permute(0, 3, 1, 2).float() / 255.0                   # (V, 3, H, W)
        features["raw RGB"].append(pooled(rgb, masks))
        features["vision backbone"].append(pooled(maps, masks))
        features["trunk tokens"].append(pooled(trunk_maps, masks))
        names += [name.split()[0] for name, _ in by_id]
        episode_of += [episode] * len(by_id)
    labels = np.array(names)
    split = int(np.searchsorted(np.array(episode_of), int(max(episode_of) * 2 / 3)))
    print(f"{len(labels)} objects in {len(set(episode_of))} first frames; {len(set(names))} colours "
          f"(chance {1 / len(set(names)):.2f}); fit on {split}, scored on {len(labels) - split}")
    print("| features | held-out colour accuracy |")
    print("|---|---|")
    for name, rows in features.items():
        print(f"| {name} | {ridge_accuracy(np.concatenate(rows), labels, split):.2f} |")


if __name__ == "__main__":
    main()
