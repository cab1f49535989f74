"""Dataset statistics for state and action normalisation (METHOD §5), stored in checkpoints.

The statistics travel as plain JSON lists inside the checkpoint's config.json (human-readable,
no pickle) and live in the model as non-persistent buffers, so `model.safetensors` holds weights
only and a checkpoint has exactly one copy of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

# A dimension whose std is below this is (near) constant in the data: it is centred but not
# scaled, so a constant gripper channel does not blow up to 1e6 at inference.
MIN_STD = 1e-6


@dataclass
class NormalizationStats:
    """Per-dimension mean and std of the state (S,) and of the actions (A,)."""

    state_mean: np.ndarray
    state_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray

    def __post_init__(self) -> None:
        for name in ("state_mean", "state_std", "action_mean", "action_std"):
            value = np.asarray(getattr(self, name), dtype=np.float32)
            if value.ndim != 1 or not np.all(np.isfinite(value)):
                raise ValueError(f"{name} must be a finite 1-D vector, got {getattr(self, name)!r}")
            setattr(self, name, value)
        for kind in ("state", "action"):
            mean, std = getattr(self, f"{kind}_mean"), getattr(self, f"{kind}_std")
            if mean.shape != std.shape:
                raise ValueError(f"{kind}_mean {mean.shape} and {kind}_std {std.shape} differ in shape")
            if np.any(std < 0):
                raise ValueError(f"{kind}_std must be >= 0, got {std.tolist()!r}")

    @classmethod
    def identity(cls, state_dim: int, action_dim: int) -> "NormalizationStats":
        return cls(np.zeros(state_dim), np.ones(state_dim), np.zeros(action_dim), np.ones(action_dim))

    @classmethod
    def from_data(cls, states: np.ndarray, actions: np.ndarray) -> "NormalizationStats":
        """Statistics of (T, S) states and (T, A) actions."""
        states, actions = np.asarray(states, np.float64), np.asarray(actions, np.float64)
        if states.ndim != 2 or actions.ndim != 2 or len(states) == 0 or len(actions) == 0:
            raise ValueError(f"need (T, S) states and (T, A) actions, got {states.shape} and {actions.shape}")
        return cls(states.mean(0), states.std(0), actions.mean(0), actions.std(0))

    def to_dict(self) -> dict[str, list[float]]:
        return {name: [float(v) for v in getattr(self, name)]
                for name in ("state_mean", "state_std", "action_mean", "action_std")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NormalizationStats":
        expected = {"state_mean", "state_std", "action_mean", "action_std"}
        if not isinstance(data, dict) or set(data) != expected:
            keys = sorted(data) if isinstance(data, dict) else data
            raise ValueError(f"normalisation stats need keys {sorted(expected)!r}, got {keys!r}")
        if not all(isinstance(v, list) and all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)
                   for v in data.values()):
            raise ValueError(f"normalisation stats must be lists of finite numbers, got {data!r}")
        return cls(**{k: np.asarray(v, np.float32) for k, v in data.items()})


class Normalizer(nn.Module):
    """(x - mean) / std for states and actions; buffers follow the model's device."""

    def __init__(self, stats: NormalizationStats) -> None:
        super().__init__()
        self.stats = stats
        for kind in ("state", "action"):
            # copies: the buffers must not alias the numpy statistics they were made from
            mean = torch.tensor(getattr(stats, f"{kind}_mean"), dtype=torch.float32)
            std = torch.tensor(getattr(stats, f"{kind}_std"), dtype=torch.float32)
            std = torch.where(std < MIN_STD, torch.ones_like(std), std)
            self.register_buffer(f"{kind}_mean", mean, persistent=False)
            self.register_buffer(f"{kind}_std", std, persistent=False)

    def normalize_state(self, state: torch.Tensor) -> torch.Tensor:  # (B, S) -> (B, S)
        return (state - self.state_mean.to(state.dtype)) / self.state_std.to(state.dtype)

    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:  # (B, H, A) -> (B, H, A)
        return (action - self.action_mean.to(action.dtype)) / self.action_std.to(action.dtype)

    def unnormalize_action(self, action: torch.Tensor) -> torch.Tensor:  # (B, H, A) -> (B, H, A)
        return action * self.action_std.to(action.dtype) + self.action_mean.to(action.dtype)
