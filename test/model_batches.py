"""Shared helpers of the model tests: configs, synthetic batches, a short training loop.

The batches come from `vla3d_ros.model.synthetic` (a ray-cast tabletop holding every batch key
of `vla3d_ros.types`), the same builder `vla3d inspect` uses.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch

from vla3d_ros import types
from vla3d_ros.model.config import PolicyConfig, preset
from vla3d_ros.model.normalization import NormalizationStats
from vla3d_ros.model.policy import VLA3DPolicy
from vla3d_ros.model.synthetic import synthetic_batch, synthetic_observation

__all__ = ["HashingSentenceModel", "make_policy", "synthetic_batch", "synthetic_observation", "tiny", "train_steps"]


class HashingSentenceModel:
    """A test double of the sentence encoder: a fixed random unit vector per text (CRC32-seeded).

    Loading the real encoder costs ~10 s of imports; the runner tests only need a deterministic
    text -> (384,) map and a call count.
    """

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self.texts: list[str] = []

    def encode(self, texts, normalize_embeddings: bool = True) -> np.ndarray:
        self.texts.extend(texts)
        vectors = np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=self.dim) for t in texts])
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True) if normalize_embeddings else vectors


def tiny(**sections) -> PolicyConfig:
    """The tiny preset with whole sections replaced, e.g. tiny(action_head=ActionHeadConfig(kind=...))."""
    return preset("tiny").replace(**sections)


def make_policy(config: PolicyConfig, batch: dict[str, torch.Tensor], stage: int) -> VLA3DPolicy:
    """A policy whose normalisation statistics come from `batch`, started at `stage`."""
    stats = NormalizationStats.from_data(batch[types.STATE].numpy(), batch[types.ACTION].flatten(0, 1).numpy())
    policy = VLA3DPolicy(config, stats)
    policy.start_stage(stage)
    return policy


def train_steps(policy: VLA3DPolicy, batch: dict[str, torch.Tensor], steps: int, lr: float = 3e-3,
                key: str = "action", stop_below: float | None = None) -> list[float]:
    """AdamW on the policy's trainable parameters; returns the `key` loss of every step.

    With `stop_below`, training stops at the first step whose loss is below `stop_below` times
    the first step's loss (tests of "the loss falls N-fold" need not run longer than that).
    """
    optimiser = torch.optim.AdamW(policy.trainable_parameters(), lr=lr)
    history: list[float] = []
    for _ in range(steps):
        losses = policy(batch)
        optimiser.zero_grad()
        losses["loss"].backward()
        optimiser.step()
        history.append(float(losses[key].detach()))
        if stop_below is not None and history[-1] < stop_below * history[0]:
            break
    return history
