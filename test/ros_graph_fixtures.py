"""Shared by the test_ros_* graph tests: a runtime config, a tiny checkpoint, a small bag."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from vla3d_ros.geometry import euler_xyz_to_matrix, intrinsics_from_fovy
from vla3d_ros.runtime.config import RuntimeConfig
from vla3d_ros.types import EE_DELTA_ACTION_NAMES, Observation

CAMERAS = ("front", "wrist")
NUM_JOINTS = 7
STEP_PERIOD = 0.1


def runtime_config(cameras=CAMERAS, **overrides) -> RuntimeConfig:
    data = {
        "base_frame": "world", "ee_frame": "ee",
        "joint_state_topic": "/t/joint_states",
        "instruction": "pick up the red cube",
        "cameras": [{"name": name, "frame_id": f"{name}_optical", "depth_encoding": "32FC1",
                     "topics": {"color": f"/t/{name}/color", "camera_info": f"/t/{name}/info",
                                "depth": f"/t/{name}/depth"}} for name in cameras],
        "sync": {"slop": 0.005, "queue_size": 5},
        "rates": {"inference_hz": 5.0, "control_hz": 10.0, "diagnostics_hz": 1.0},
        "watchdog": {"observation_timeout": 1.0, "command_timeout": 0.2, "camera_timeout": 2.0},
        "safety": {"start_in_dry_run": False},
        "output": {"servo": {"topic": "/t/servo", "frame_id": "world"}, "gripper_topic": "/t/gripper"},
    }
    data.update(overrides)
    return RuntimeConfig.from_dict(data)


def save_tiny_checkpoint(directory: Path, num_views: int = len(CAMERAS), num_joints: int = NUM_JOINTS) -> Path:
    """A `tiny` policy (random weights) saved with the model engineer's API."""
    import torch

    from vla3d_ros.model.checkpoint import save_checkpoint
    from vla3d_ros.model.config import preset
    from vla3d_ros.model.policy import VLA3DPolicy

    torch.manual_seed(0)
    config = dataclasses.replace(preset("tiny"), num_views=num_views, state_dim=num_joints + 8)
    return save_checkpoint(directory, VLA3DPolicy(config), step_period=STEP_PERIOD)


def observation(t: int, rng: np.random.Generator, cameras=CAMERAS, size: int = 16) -> Observation:
    views = len(cameras)
    T = np.tile(np.eye(4), (views, 1, 1))
    for v in range(views):
        T[v, :3, :3] = euler_xyz_to_matrix(-2.2, 0.0, 1.57 + 0.3 * v + 0.05 * t)
        T[v, :3, 3] = (0.5 + 0.5 * np.cos(v), 0.5 * np.sin(v), 0.6)
    ee = np.array([0.45 + 0.01 * t, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0], np.float32)
    return Observation(
        camera_names=tuple(cameras),
        rgb=rng.integers(0, 256, (views, size, size, 3), dtype=np.uint8),
        depth=rng.uniform(0.4, 1.2, (views, size, size)).astype(np.float32),
        intrinsics=np.stack([intrinsics_from_fovy(60.0, size, size)] * views),
        T_base_cam=T, joint_positions=rng.normal(size=NUM_JOINTS).astype(np.float32), ee_pose=ee,
        gripper=1.0, instruction="pick up the red cube", stamp=round(STEP_PERIOD * t, 9),
        joint_names=tuple(f"joint{i}" for i in range(1, NUM_JOINTS + 1)))


class MemoryEpisode:
    """An in-memory episode with EpisodeReader's interface, for `bags.write_bag`."""

    def __init__(self, num_steps: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.meta = {"task": "pick", "camera_names": list(CAMERAS), "step_period": STEP_PERIOD,
                     "action_names": list(EE_DELTA_ACTION_NAMES), "seed": seed, "success": True}
        self.observations = [observation(t, rng) for t in range(num_steps)]
        self.actions = rng.normal(scale=0.01, size=(num_steps, 7)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.observations)

    def observation(self, t: int) -> Observation:
        return self.observations[t]

    def action(self, t: int) -> np.ndarray:
        return self.actions[t]

    def segmentation(self, t: int):
        return None


class ConstantInstructionEncoder:
    """Stands in for the sentence encoder (seconds to load) where the test is not about language."""

    def embed(self, instruction: str) -> np.ndarray:
        return np.full(384, 1.0 / np.sqrt(384), np.float32)


def fast_policy_loader():
    import functools

    from vla3d_ros.ros.inference_node import load_checkpoint_policy
    return functools.partial(load_checkpoint_policy, instruction_encoder=ConstantInstructionEncoder())
