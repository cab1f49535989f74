"""Geometrically consistent synthetic batches, for `vla3d inspect` and the model tests.

A ray-cast tabletop: a table plane z = 0, a few axis-aligned boxes on it, V cameras on a circle
looking at the workspace. Depth, RGB, intrinsics, extrinsics and the pseudo-label targets
(boxes, masks, centroids, completion points) all come from the same scene, so every batch key
of `vla3d_ros.types` is present and mutually consistent. Numpy, seeded, no simulator.
"""
from __future__ import annotations

import numpy as np
import torch

from vla3d_ros import types
from vla3d_ros.geometry import intrinsics_from_fovy
from vla3d_ros.model.config import PolicyConfig

# Observation.state = joints (J) + ee pose (7) + gripper (1): J follows the config's state_dim.
_NON_JOINT_STATE = 8
_LOOK_AT = np.array([0.45, 0.0, 0.05])
_PALETTE = np.array([[200, 60, 50], [60, 170, 70], [50, 90, 200], [220, 190, 40], [160, 70, 190],
                     [40, 190, 190]], np.float64)


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """T_base_cam (4,4) of an OpenCV camera at `eye` looking at `target` (z forward, y down)."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    T = np.eye(4)
    T[:3, :3] = np.stack([right, down, forward], axis=1)
    T[:3, 3] = eye
    return T


def _scene(config: PolicyConfig, rng: np.random.Generator, num_objects: int) -> dict[str, np.ndarray]:
    """One scene: images, cameras, objects and their labels (numpy, unbatched)."""
    height, width = config.image_size
    views = config.num_views
    K = np.repeat(intrinsics_from_fovy(60.0, width, height)[None], views, 0)
    angles = np.deg2rad(-60 + 120 * np.arange(views) / max(views - 1, 1)) + rng.uniform(-0.1, 0.1, views)
    eyes = np.stack([_LOOK_AT[0] - 0.8 * np.cos(angles), 0.8 * np.sin(angles), 0.55 + rng.uniform(0, 0.1, views)], 1)
    T = np.stack([_look_at(eye, _LOOK_AT) for eye in eyes])
    centres = np.stack([rng.uniform(0.3, 0.6, num_objects), rng.uniform(-0.2, 0.2, num_objects)], 1)
    half = rng.uniform(0.025, 0.05, (num_objects, 3))
    low = np.concatenate([centres - half[:, :2], np.zeros((num_objects, 1))], 1)
    high = np.concatenate([centres + half[:, :2], 2 * half[:, 2:]], 1)
    # ray cast: rays with z_cam = 1, so the hit parameter t is the z-depth
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    pixels = np.stack([u, v, np.ones_like(u)], -1)                                  # (H, W, 3)
    rays = np.einsum("vij,vjk,hwk->vhwi", T[:, :3, :3], np.linalg.inv(K), pixels)  # (V, H, W, 3)
    origins = T[:, None, None, :3, 3]
    depth = np.where(rays[..., 2] < 0, -origins[..., 2] / np.minimum(rays[..., 2], -1e-9), np.inf)
    segmentation = np.zeros((views, height, width), np.int32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for index in range(num_objects):
            t0 = (low[index] - origins) / rays
            t1 = (high[index] - origins) / rays
            near = np.nanmax(np.minimum(t0, t1), -1)
            far = np.nanmin(np.maximum(t0, t1), -1)
            hit = (near <= far) & (near > 0) & (near < depth)
            depth = np.where(hit, near, depth)
            segmentation[hit] = index + 1
    depth = np.where(np.isfinite(depth) & (depth < 3.0), depth, np.nan).astype(np.float32)
    shade = np.clip(1.3 - 0.4 * np.nan_to_num(depth, nan=2.0), 0.2, 1.0)[..., None]
    colour = np.where(segmentation[..., None] > 0, _PALETTE[(segmentation - 1) % len(_PALETTE)], 140.0)
    rgb = np.clip(colour * shade + rng.normal(0, 4, colour.shape), 0, 255).astype(np.uint8)
    # labels: per-view boxes and masks from the segmentation, centroid = box centre
    mask_hw = (height // 4, width // 4)
    masks = np.zeros((num_objects, views, *mask_hw), bool)
    boxes = np.zeros((num_objects, views, 4), np.float32)
    for index in range(num_objects):
        for view in range(views):
            ys, xs = np.nonzero(segmentation[view] == index + 1)
            if len(xs) == 0:
                continue
            x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
            boxes[index, view] = [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width,
                                  (y1 - y0) / height]
            masks[index, view] = (segmentation[view] == index + 1)[2::4, 2::4]
    corners = np.stack(np.meshgrid(*[[0, 1]] * 3, indexing="ij"), -1).reshape(-1, 3)  # (8, 3)
    box_corners = low[:, None] + corners * (high - low)[:, None]                      # (T, 8, 3)
    far_first = np.argsort(-np.linalg.norm(box_corners - eyes[0], axis=-1), axis=1)  # hidden side first
    return {"rgb": rgb, "depth": depth, "K": K, "T": T, "segmentation": segmentation,
            "boxes": boxes, "box_valid": boxes[..., 2] > 0, "masks": masks,
            "centroids": ((low + high) / 2).astype(np.float32),
            "corners": np.take_along_axis(box_corners, far_first[..., None], 1).astype(np.float32)}


def _num_joints(config: PolicyConfig) -> int:
    joints = config.state_dim - _NON_JOINT_STATE
    if joints < 0:
        raise ValueError(f"state_dim {config.state_dim!r} cannot hold ee pose (7) + gripper (1)")
    return joints


def _proprio(rng: np.random.Generator, num_joints: int) -> tuple[np.ndarray, np.ndarray, float]:
    joints = rng.uniform(-1.0, 1.0, num_joints).astype(np.float32)
    quaternion = rng.normal(size=4)
    ee_pose = np.concatenate([[rng.uniform(0.3, 0.6), rng.uniform(-0.2, 0.2), rng.uniform(0.1, 0.3)],
                              quaternion / np.linalg.norm(quaternion)]).astype(np.float32)
    return joints, ee_pose, float(rng.uniform(0, 1))


def synthetic_batch(config: PolicyConfig, batch_size: int = 2, seed: int = 0, num_objects: int = 3,
                    device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A batch with every key of `vla3d_ros.types` for a policy of this config."""
    num_joints = _num_joints(config)
    rng = np.random.default_rng(seed)
    scenes = [_scene(config, rng, num_objects) for _ in range(batch_size)]
    proprio = [_proprio(rng, num_joints) for _ in range(batch_size)]
    per_instance = config.completion.points_per_instance
    completion = np.stack([s["corners"][:, :per_instance].reshape(-1, 3) for s in scenes])
    actions = np.cumsum(rng.normal(0, 0.3, (batch_size, config.horizon, config.action_dim)), 1)
    is_pad = np.zeros((batch_size, config.horizon), bool)
    is_pad[0, -1] = True                                     # sample 0 ends one step before the horizon
    instruction = rng.normal(size=(batch_size, config.instruction_dim))
    arrays = {
        types.RGB: np.stack([s["rgb"] for s in scenes]).transpose(0, 1, 4, 2, 3),
        types.DEPTH: np.stack([s["depth"] for s in scenes]),
        types.INTRINSICS: np.stack([s["K"] for s in scenes]).astype(np.float32),
        types.T_BASE_CAM: np.stack([s["T"] for s in scenes]).astype(np.float32),
        types.STATE: np.stack([np.concatenate([j, e, [g]]) for j, e, g in proprio]).astype(np.float32),
        types.EE_POSITION: np.stack([e[:3] for _, e, _ in proprio]),
        types.INSTRUCTION_EMBEDDING: (instruction / np.linalg.norm(instruction, axis=1, keepdims=True)).astype(np.float32),
        types.ACTION: actions.astype(np.float32),
        types.ACTION_IS_PAD: is_pad,
        types.TARGET_BOXES: np.stack([s["boxes"] for s in scenes]),
        types.TARGET_BOX_VALID: np.stack([s["box_valid"] for s in scenes]),
        types.TARGET_MASKS: np.stack([s["masks"] for s in scenes]),
        types.TARGET_CENTROIDS: np.stack([s["centroids"] for s in scenes]),
        types.TARGET_VALID: np.ones((batch_size, num_objects), bool),
        types.COMPLETION_POINTS: completion.astype(np.float32),
        types.COMPLETION_VALID: np.ones(completion.shape[:2], bool),
    }
    return {key: torch.from_numpy(np.ascontiguousarray(value)).to(device) for key, value in arrays.items()}


def synthetic_observation(config: PolicyConfig, seed: int = 0, num_objects: int = 3,
                          instruction: str = "put the red block on the green block") -> types.Observation:
    """One `Observation` of a synthetic scene (what the simulator or a camera node would give)."""
    rng = np.random.default_rng(seed)
    num_joints = _num_joints(config)
    scene = _scene(config, rng, num_objects)
    joints, ee_pose, gripper = _proprio(rng, num_joints)
    return types.Observation(
        camera_names=tuple(f"cam{v}" for v in range(config.num_views)), rgb=scene["rgb"],
        depth=scene["depth"], intrinsics=scene["K"], T_base_cam=scene["T"], joint_positions=joints,
        ee_pose=ee_pose, gripper=gripper, instruction=instruction)
