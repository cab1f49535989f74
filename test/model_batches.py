"""Shared helpers of the model tests: configs, synthetic batches, a short training loop.

The batches come from `vla3d_ros.model.synthetic` (a ray-cast tabletop holding every batch key
of `vla3d_ros.types`), the same builder `vla3d inspect` uses.
"""
from __future__ import annotations

import pytest
import torch

from vla3d_ros import types
from vla3d_ros.model.config import PolicyConfig, preset
from vla3d_ros.model.normalization import NormalizationStats
from vla3d_ros.model.policy import VLA3DPolicy
from vla3d_ros.model.synthetic import synthetic_batch, synthetic_observation

__all__ = ["make_policy", "synthetic_batch", "synthetic_observation", "tiny", "torch_single_thread", "train_steps"]


@pytest.fixture
def torch_single_thread():
    """One torch thread: the machine is shared, and tiny models only lose to thread contention."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(previous)


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
                key: str = "action") -> list[float]:
    """AdamW on the policy's trainable parameters; returns the `key` loss of every step."""
    optimiser = torch.optim.AdamW(policy.trainable_parameters(), lr=lr)
    history = []
    for _ in range(steps):
        losses = policy(batch)
        optimiser.zero_grad()
        losses["loss"].backward()
        optimiser.step()
        history.append(float(losses[key].detach()))
    return history
