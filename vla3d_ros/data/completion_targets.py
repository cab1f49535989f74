"""Completion coordinates P_comp for the self-supervised predictor (METHOD.md §3.2).

Per instance (at most `max_instances`, in label order):
1. unproject the instance's mask pixels with valid depth from every view (base frame);
2. voxel-downsample and denoise with DBSCAN, keeping the largest cluster (drops mask-edge
   pixels that landed on the table or a neighbour);
3. complete the shape with a `ShapeCompleter`;
4. keep the completed points farthest from the observed ones (the unobserved side);
5. farthest-point-sample `points_per_instance` of them.

The paper completes with a learned network (PointAttn); no such weights are installable here,
so the default `GeometricCompleter` is geometric **(ours)**:
- the instance's vertical axis passes through the centre of the minimum-area rectangle around
  its observed points seen from above (cameras look down on the table, so the top face fixes
  the footprint even when the back is hidden); observed points are mirrored through that axis
  (a 180-degree turn about it), which puts the visible front of a box or a round object onto its
  hidden back;
- the back faces of the oriented bounding box (footprint rectangle x observed height range;
  faces whose outward normal points away from every camera) are sampled, but only where the
  mirror left a gap, i.e. farther than half the footprint's smaller half-extent from every
  mirrored point. For a round object the box's corners lie within r(sqrt 2 - 1) < r/2 of its
  surface, so they are never added where the mirror already covers the back.
A learned completer plugs in behind `ShapeCompleter.complete(observed, viewpoints)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.spatial import ConvexHull, QhullError, cKDTree

from vla3d_ros.data.labels import InstanceLabels, observation_point_maps
from vla3d_ros.types import Observation


class ShapeCompleter(Protocol):
    """Completes one instance's partial point cloud."""

    def complete(self, observed: np.ndarray, viewpoints: np.ndarray) -> np.ndarray:
        """Candidate surface points (M, 3) of the whole shape, base frame.

        Args:
            observed: (N, 3) denoised observed points of one instance, base frame.
            viewpoints: (V, 3) camera centres, base frame (tell seen from unseen sides).
        """
        ...


def footprint_rectangle(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-area rectangle around 2D points (rotating calipers over the convex hull).

    Args:
        xy: (N, 2).
    Returns:
        centre (2,), axes (2, 2) with the rectangle's unit axes as rows, half extents (2,).
    """
    try:
        hull = xy[ConvexHull(xy).vertices]
    except (QhullError, ValueError):          # < 3 points or collinear: axis-aligned box
        hull = xy
    edges = np.diff(np.vstack([hull, hull[:1]]), axis=0)
    angles = np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2))
    if len(angles) == 0:
        angles = np.zeros(1)
    best = None
    for angle in angles:
        axes = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        local = hull @ axes.T
        low, high = local.min(axis=0), local.max(axis=0)
        area = np.prod(high - low)
        if best is None or area < best[0]:
            best = (area, axes, low, high)
    _, axes, low, high = best
    centre_local = (low + high) / 2
    return centre_local @ axes, axes, (high - low) / 2


@dataclass
class GeometricCompleter:
    """Mirror through the vertical axis + back faces of the oriented box (module docstring)."""

    face_spacing: float = 0.005     # grid spacing of the box-face samples, metres

    def __post_init__(self) -> None:
        if not self.face_spacing > 0:
            raise ValueError(f"face_spacing must be > 0, got {self.face_spacing}")

    def complete(self, observed: np.ndarray, viewpoints: np.ndarray) -> np.ndarray:
        centre, axes, half = footprint_rectangle(observed[:, :2])
        mirrored = observed.copy()
        mirrored[:, :2] = 2 * centre - observed[:, :2]
        faces = self._back_faces(centre, axes, half, observed[:, 2].min(), observed[:, 2].max(),
                                 viewpoints)
        if len(faces):
            gap = cKDTree(mirrored).query(faces)[0] > 0.5 * half.min()
            faces = faces[gap]
        return np.concatenate([mirrored, faces])

    def _back_faces(self, centre, axes, half, z_low, z_high, viewpoints) -> np.ndarray:
        """(M, 3) grid samples of the box faces that face away from every viewpoint."""
        half3 = np.array([half[0], half[1], (z_high - z_low) / 2])
        centre3 = np.array([centre[0], centre[1], (z_low + z_high) / 2])
        rotation = np.eye(3)
        rotation[:2, :2] = axes.T                  # box-local -> base: columns are the axes
        samples = []
        for axis in range(3):
            for sign in (-1.0, 1.0):
                normal = sign * rotation[:, axis]
                face_centre = centre3 + normal * half3[axis]
                if np.any((viewpoints - face_centre) @ normal > 0):
                    continue                           # some camera looks at this face
                u_axis, v_axis = [a for a in range(3) if a != axis]
                us = np.linspace(-half3[u_axis], half3[u_axis],
                                 max(2, int(np.ceil(2 * half3[u_axis] / self.face_spacing)) + 1))
                vs = np.linspace(-half3[v_axis], half3[v_axis],
                                 max(2, int(np.ceil(2 * half3[v_axis] / self.face_spacing)) + 1))
                grid_u, grid_v = np.meshgrid(us, vs, indexing="ij")
                local = np.zeros((grid_u.size, 3))
                local[:, axis] = sign * half3[axis]
                local[:, u_axis] = grid_u.ravel()
                local[:, v_axis] = grid_v.ravel()
                samples.append(local @ rotation.T + centre3)
        return np.concatenate(samples) if samples else np.zeros((0, 3))


@dataclass
class CompletionTargetConfig:
    """Parameters of `completion_targets` besides the instance/point budget (metres)."""

    voxel_size: float = 0.004
    dbscan_eps: float = 0.015
    dbscan_min_points: int = 4
    min_instance_points: int = 8     # fewer denoised points: too little to complete, skipped
    keep_fraction: float = 0.3       # share of completed points kept as "farthest from observed"

    def __post_init__(self) -> None:
        for name in ("voxel_size", "dbscan_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("dbscan_min_points", "min_instance_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.keep_fraction <= 1:
            raise ValueError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}")


def denoise_instance_points(points: np.ndarray, config: CompletionTargetConfig) -> np.ndarray:
    """Voxel-downsample (N, 3) points and keep DBSCAN's largest cluster: (M, 3), M may be 0."""
    import open3d as o3d

    if len(points) == 0:
        return np.zeros((0, 3))
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    pcd = pcd.voxel_down_sample(config.voxel_size)
    labels = np.asarray(pcd.cluster_dbscan(config.dbscan_eps, config.dbscan_min_points))
    if labels.max() < 0:
        return np.zeros((0, 3))
    largest = np.argmax(np.bincount(labels[labels >= 0]))
    return np.asarray(pcd.points)[labels == largest]


def farthest_point_sample(points: np.ndarray, count: int, start: int = 0) -> np.ndarray:
    """Indices (min(count, N),) of a farthest-point sample of (N, 3) points, from `start`."""
    count = min(count, len(points))
    chosen = [start]
    distance = np.linalg.norm(points - points[start], axis=1)
    for _ in range(count - 1):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return np.asarray(chosen[:count], dtype=np.int64)


def completion_targets(
    obs: Observation,
    labels: InstanceLabels,
    max_instances: int = 6,
    points_per_instance: int = 5,
    *,
    completer: ShapeCompleter | None = None,
    config: CompletionTargetConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """P_comp of one observation (METHOD §3.2).

    Returns:
        points (P, 3) float32 base frame, P = max_instances * points_per_instance, instance t's
        points at rows [t * points_per_instance, (t + 1) * points_per_instance); and
        valid (P,) bool (False for padding and for instances too small to complete).
    """
    if max_instances < 1 or points_per_instance < 1:
        raise ValueError(
            f"max_instances and points_per_instance must be >= 1, got {max_instances}, "
            f"{points_per_instance}"
        )
    completer = completer or GeometricCompleter()
    config = config or CompletionTargetConfig()
    points = np.zeros((max_instances * points_per_instance, 3), np.float32)
    valid = np.zeros(max_instances * points_per_instance, bool)
    point_maps, point_valid = observation_point_maps(obs)                   # (V, H, W, 3)
    viewpoints = obs.T_base_cam[:, :3, 3]                                   # (V, 3)
    for t in range(min(labels.num_instances, max_instances)):
        observed = denoise_instance_points(point_maps[labels.masks[t] & point_valid], config)
        if len(observed) < config.min_instance_points:
            continue
        candidates = np.asarray(completer.complete(observed, viewpoints), dtype=np.float64)
        if candidates.ndim != 2 or candidates.shape[1] != 3 or len(candidates) == 0:
            raise ValueError(f"completer must return (M>0, 3) points, got shape {candidates.shape}")
        distance = cKDTree(observed).query(candidates)[0]
        keep = max(points_per_instance, int(np.ceil(config.keep_fraction * len(candidates))))
        farthest = np.argsort(-distance, kind="stable")[:keep]
        sample = candidates[farthest[farthest_point_sample(candidates[farthest], points_per_instance)]]
        rows = slice(t * points_per_instance, t * points_per_instance + len(sample))
        points[rows] = sample
        valid[rows] = True
    return points, valid
