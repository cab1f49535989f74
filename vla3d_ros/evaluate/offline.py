"""Offline action error of a checkpoint on recorded episodes or ROS 2 bags.

For every step t of every episode the policy predicts a chunk from observation t, compared with
the recorded actions t .. t+H-1 (rows past the episode end are excluded through ACTION_IS_PAD),
per action dimension:

- `l1_metric`           mean |predicted - recorded| in the action's own units (m, rad, gripper);
- `l1_normalised`       the same divided by the checkpoint's action std (its normalisation stats),
                        so dimensions are comparable and 1.0 is "one dataset std off";
- `*_first_row`         only row 0, the action executed first.

Bags (a bag, or a directory of bags) are converted into episodes in a temporary directory with
`data.bags.bag_to_episode` first, so episodes and bags go through the same code.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vla3d_ros import types
from vla3d_ros.data.dataset import DatasetConfig, EpisodeDataset
from vla3d_ros.data.episodes import list_episodes
from vla3d_ros.model.precision import autocast, resolve_precision


def _accumulate(totals: dict, prediction: torch.Tensor, target: torch.Tensor, is_pad: torch.Tensor,
                std: torch.Tensor) -> None:
    error = (prediction - target).abs().double()                            # (B, H, A)
    valid = (~is_pad).double()[..., None]                                   # (B, H, 1)
    totals["metric"] += (error * valid).sum((0, 1))
    totals["normalised"] += (error / std * valid).sum((0, 1))
    totals["rows"] += valid.sum()
    totals["metric_first"] += error[:, 0].sum(0)
    totals["normalised_first"] += (error[:, 0] / std).sum(0)
    totals["samples"] += error.shape[0]


def action_error(policy, root: Path, *, embed: Callable[[str], np.ndarray], encoder_name: str,
                 batch_size: int = 16, seed: int = 0, precision: str = "fp32") -> dict:
    """Action error of `policy` over every step of the episodes under `root`, its forward at
    `precision` (`model.precision`: "auto", "fp32" or "bf16")."""
    config = DatasetConfig.from_policy_config(policy.config, with_targets=False)
    dataset = EpisodeDataset(root, config, embed=embed, encoder_name=encoder_name)
    device = next(policy.parameters()).device
    std = policy.normalizer.action_std.to(device=device, dtype=torch.float64)
    action_dim = policy.config.action_dim
    totals = {name: torch.zeros(action_dim, dtype=torch.float64, device=device)
              for name in ("metric", "normalised", "metric_first", "normalised_first")}
    totals.update(rows=torch.zeros((), dtype=torch.float64, device=device), samples=0)
    generator = torch.Generator(device=device).manual_seed(seed)
    precision = resolve_precision(precision, device)
    policy.eval()
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = {key: torch.as_tensor(np.stack([s[key] for s in samples])).to(device) for key in samples[0]}
            with autocast(precision, device):
                prediction = policy.predict(batch, generator=generator).actions.double()
            _accumulate(totals, prediction, batch[types.ACTION].double(), batch[types.ACTION_IS_PAD].bool(), std)
    names = list(policy.config.action_names)

    def per_dimension(values: torch.Tensor, count) -> dict[str, float]:
        return {name: float(v) for name, v in zip(names, (values / count).tolist())}

    rows, samples = float(totals["rows"]), totals["samples"]
    return {
        "precision": precision, "episodes": len(dataset.episode_dirs), "samples": samples, "rows": int(rows), "action_names": names,
        "l1_metric": per_dimension(totals["metric"], rows),
        "l1_normalised": per_dimension(totals["normalised"], rows),
        "l1_metric_first_row": per_dimension(totals["metric_first"], samples),
        "l1_normalised_first_row": per_dimension(totals["normalised_first"], samples),
        "l1_normalised_mean": float(totals["normalised"].sum() / (rows * action_dim)),
    }


def offline_evaluation(checkpoint: Path, source: Path, *, embed: Callable[[str], np.ndarray] | None = None,
                       encoder_name: str | None = None, batch_size: int = 16, device: str = "cpu",
                       seed: int = 0, precision: str = "auto") -> dict:
    """`vla3d eval --offline`: episodes directory, a bag, or a directory of bags."""
    from vla3d_ros.data.bags import bag_to_episode, find_bags
    from vla3d_ros.model.checkpoint import load_checkpoint

    policy, meta = load_checkpoint(checkpoint, device=device)
    if embed is None:
        from vla3d_ros.model.base import InstructionEncoder
        from vla3d_ros.train.trainer import ENCODER_NAME

        embed, encoder_name = InstructionEncoder(device="cpu").embed, ENCODER_NAME
    source = Path(source)
    common = dict(embed=embed, encoder_name=encoder_name or "custom", batch_size=batch_size, seed=seed,
                  precision=precision)
    if list_episodes(source):
        result = action_error(policy, source, **common)
    else:
        bags = find_bags(source)
        if not bags:
            raise ValueError(f"{source} holds neither episodes nor ROS 2 bags")
        with tempfile.TemporaryDirectory(prefix="vla3d-offline-") as tmp:
            for index, bag in enumerate(bags):
                bag_to_episode(bag, tmp, index)
            result = action_error(policy, Path(tmp), **common)
    return {"checkpoint": str(checkpoint), "data": str(source), "stage": meta["stage"], **result}
