"""Test helper for the data/train/eval tests: tiny synthetic episodes with known contents.

Each episode is a box moving on a table under two top-down cameras (exact depth and
segmentation), with actions that encode (episode, step) so action chunks can be checked exactly:
action[t] = [episode, t, t^2 / 100, 0.1 * episode, -0.01 * t, 0, gripper], gripper 1 then 0.
`fake_embed` stands in for the sentence encoder (which takes ~10 s to load) in fast tests.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from vla3d_ros.data.episodes import EpisodeWriter
from vla3d_ros.geometry import intrinsics_from_fovy
from vla3d_ros.types import Observation

CAMERA_HEIGHT = 1.0
BOX_HALF = 0.08          # half side of the box footprint (m)
BOX_HEIGHT = 0.1
NUM_JOINTS = 7
INSTRUCTIONS = ("pick up the red box", "push the red box left")


def fake_embed(text: str, dim: int = 384) -> np.ndarray:
    """A deterministic unit vector per text."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).normal(size=dim)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def known_action(episode: int, t: int, num_steps: int) -> np.ndarray:
    gripper = 1.0 if t < num_steps // 2 else 0.0
    return np.array([episode, t, t * t / 100.0, 0.1 * episode, -0.01 * t, 0.0, gripper], np.float32)


def _camera(x: float, y: float) -> np.ndarray:
    """T_base_cam of a camera at height CAMERA_HEIGHT looking straight down (OpenCV axes)."""
    T = np.eye(4)
    T[:3, :3] = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])   # x_cam = -y_base, z down
    T[:3, 3] = (x, y, CAMERA_HEIGHT)
    return T


def render_step(box_xy: tuple[float, float], image_size: tuple[int, int], cameras: list[np.ndarray]):
    """(rgb, depth, segmentation, K) of the box scene; exact for top-down cameras."""
    height, width = image_size
    K = intrinsics_from_fovy(60.0, width, height)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)   # z = 1
    rgbs, depths, segs = [], [], []
    for T in cameras:
        top_depth = CAMERA_HEIGHT - BOX_HEIGHT
        points = (rays * top_depth) @ T[:3, :3].T + T[:3, 3]          # where rays meet the box top plane
        inside = (np.abs(points[..., 0] - box_xy[0]) <= BOX_HALF) & (np.abs(points[..., 1] - box_xy[1]) <= BOX_HALF)
        depth = np.where(inside, top_depth, CAMERA_HEIGHT).astype(np.float32)
        rgb = np.full((height, width, 3), 90, np.uint8)
        rgb[inside] = (200, 40, 30)
        rgbs.append(rgb), depths.append(depth), segs.append(inside.astype(np.int32))
    return np.stack(rgbs), np.stack(depths), np.stack(segs), np.repeat(K[None], len(cameras), 0)


def write_synthetic_episodes(root: Path, *, num_episodes: int = 2, num_steps: int = 6,
                             image_size: tuple[int, int] = (32, 32), num_views: int = 2,
                             seed_offset: int = 0, task: str = "synthetic_box",
                             instructions: tuple[str, ...] = INSTRUCTIONS,
                             camera_names: tuple[str, ...] | None = None) -> list[Path]:
    cameras = [_camera(0.5 + 0.05 * v, 0.05 * v) for v in range(num_views)]
    names = camera_names or tuple(f"cam{v}" for v in range(num_views))
    paths = []
    for episode in range(num_episodes):
        meta = {"task": task, "step_period": 0.1, "seed": seed_offset + episode,
                "object_ids": {"red box": 1}}
        with EpisodeWriter(Path(root), episode, meta, names, rgb_format="png") as writer:
            for t in range(num_steps):
                box_xy = (0.5 + 0.01 * t, -0.02 * episode)
                rgb, depth, seg, K = render_step(box_xy, image_size, cameras)
                obs = Observation(
                    camera_names=names, rgb=rgb, depth=depth, intrinsics=K, T_base_cam=np.stack(cameras),
                    joint_positions=np.linspace(0, 1, NUM_JOINTS).astype(np.float32) + 0.01 * t,
                    ee_pose=np.array([0.4 + 0.01 * t, 0.0, 0.3, 0, 0, 0, 1], np.float32),
                    gripper=1.0 - t / num_steps, instruction=instructions[episode % len(instructions)],
                    stamp=0.1 * t)
                writer.add_step(obs, known_action(episode, t, num_steps), segmentation=seg)
            paths.append(writer.close(success=True))
    return paths


def train_tiny_stage1(data: Path, out: Path, steps: int = 1, **options):
    """`vla3d train --preset tiny --stage 1` on synthetic episodes, one process, fake sentence encoder;
    -> (the final checkpoint's policy, the stage results)."""
    from vla3d_ros.model.checkpoint import load_checkpoint
    from vla3d_ros.train.trainer import TrainConfig, train

    results = train(TrainConfig(data=data, out=out, preset="tiny", stage="1", steps=steps, batch_size=2,
                                num_workers=0, threads=1, progress_bar=False, log_every=1, **options),
                    embed=fake_embed, encoder_name="fake")
    return load_checkpoint(out / "final")[0], results
