"""Test helper: exact ray-cast RGB-D of boxes and cylinders on a table (z = 0), numpy only.

Known geometry lets the data tests check pseudo-labels and completion targets against the
truth: depth, instance segmentation and surface distance are all analytic.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla3d_ros.geometry import intrinsics_from_fovy, invert_transform, transform_points
from vla3d_ros.types import Observation

TABLE_HALF_SIZE = 0.4


@dataclass
class Box:
    centre: tuple[float, float]   # x, y on the table
    half: tuple[float, float, float]
    yaw: float = 0.0
    base: float = 0.0             # height of the bottom face above the table

    def rotation(self) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def to_local(self, points: np.ndarray) -> np.ndarray:
        origin = np.array([self.centre[0], self.centre[1], self.base + self.half[2]])
        return (points - origin) @ self.rotation()

    def intersect(self, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Ray parameter of the first hit (N,), inf where missed (slab method)."""
        o, d = self.to_local(origin[None])[0], direction @ self.rotation()
        half = np.asarray(self.half)
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (-half - o) / d, (half - o) / d
        t_near = np.nanmax(np.minimum(t1, t2), axis=1)
        t_far = np.nanmin(np.maximum(t1, t2), axis=1)
        return np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)

    def surface_distance(self, points: np.ndarray) -> np.ndarray:
        q = np.abs(self.to_local(points)) - np.asarray(self.half)
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
        return outside + np.abs(np.minimum(q.max(axis=1), 0.0))


@dataclass
class Cylinder:
    centre: tuple[float, float]
    radius: float
    height: float

    def intersect(self, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
        cx, cy = self.centre
        ox, oy, oz = origin[0] - cx, origin[1] - cy, origin[2]
        dx, dy, dz = direction.T
        a = dx * dx + dy * dy
        b = 2 * (ox * dx + oy * dy)
        c = ox * ox + oy * oy - self.radius**2
        disc = b * b - 4 * a * c
        with np.errstate(invalid="ignore", divide="ignore"):
            t_side = (-b - np.sqrt(disc)) / (2 * a)
            z_side = oz + t_side * dz
            side_ok = (disc >= 0) & (t_side > 0) & (z_side >= 0) & (z_side <= self.height)
            t_top = (self.height - oz) / dz
            tx, ty = ox + t_top * dx, oy + t_top * dy
            top_ok = (t_top > 0) & (tx * tx + ty * ty <= self.radius**2)
        return np.minimum(np.where(side_ok, t_side, np.inf), np.where(top_ok, t_top, np.inf))

    def surface_distance(self, points: np.ndarray) -> np.ndarray:
        radial = np.hypot(points[:, 0] - self.centre[0], points[:, 1] - self.centre[1])
        dr, dz = radial - self.radius, points[:, 2] - self.height
        below = points[:, 2] <= self.height
        inside = radial <= self.radius
        z = points[:, 2]
        side = np.where(below & (z >= 0), np.abs(dr), np.hypot(dr, np.where(below, z, dz)))
        caps = [np.where(inside, np.abs(cap_z), np.hypot(dr, cap_z)) for cap_z in (dz, z)]
        return np.minimum(side, np.minimum(*caps))


def look_at(eye, target) -> np.ndarray:
    """(4, 4) T_base_cam of an OpenCV camera at `eye` looking at `target` (image up ~ base +z)."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = eye
    return T


CAMERA_EYES = {
    "front": (0.55, 0.0, 0.45),
    "side": (0.0, 0.55, 0.45),
    "back": (-0.45, -0.3, 0.5),
}


def render(objects, eyes, size: int = 96, fovy: float = 55.0, target=(0.0, 0.0, 0.03)):
    """Depth (V, H, W) float32 (NaN off the table), segmentation (V, H, W) int32 (object i -> i+1),
    K (V, 3, 3) and T_base_cam (V, 4, 4)."""
    K = intrinsics_from_fovy(fovy, size, size)
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    depths, segs, Ts = [], [], []
    for eye in eyes:
        T = look_at(eye, target)
        direction = rays_cam.reshape(-1, 3) @ T[:3, :3].T          # z_cam = 1 per unit t
        origin = T[:3, 3]
        with np.errstate(divide="ignore"):
            t_table = np.where(direction[:, 2] < 0, -origin[2] / direction[:, 2], np.inf)
        with np.errstate(invalid="ignore"):
            hit = origin + t_table[:, None] * direction
            on_table = np.all(np.abs(hit[:, :2]) <= TABLE_HALF_SIZE, axis=1)
        t_best = np.where(on_table, t_table, np.inf)
        seg = np.zeros(len(direction), np.int32)
        for index, obj in enumerate(objects):
            t_obj = obj.intersect(origin, direction)
            closer = t_obj < t_best
            t_best = np.where(closer, t_obj, t_best)
            seg[closer] = index + 1
        depth = np.where(np.isfinite(t_best), t_best, np.nan).astype(np.float32)
        depths.append(depth.reshape(size, size))
        segs.append(seg.reshape(size, size))
        Ts.append(T)
    num = len(eyes)
    return np.stack(depths), np.stack(segs), np.repeat(K[None], num, 0), np.stack(Ts)


def make_observation(depth, K, T, names=None, stamp: float = 0.0) -> Observation:
    num, size = depth.shape[0], depth.shape[1]
    names = tuple(names or [f"cam{i}" for i in range(num)])
    rgb = np.zeros((num, size, depth.shape[2], 3), np.uint8)
    return Observation(
        camera_names=names,
        rgb=rgb,
        depth=depth,
        intrinsics=K,
        T_base_cam=T,
        joint_positions=np.zeros(7, np.float32),
        ee_pose=np.array([0.3, 0.0, 0.4, 0.0, 0.0, 0.0, 1.0], np.float32),
        gripper=1.0,
        instruction="pick up the box",
        stamp=stamp,
    )


def camera_frame_points(depth, K, T):
    """All views' valid depth pixels as base-frame points, (N, 3) (for checks)."""
    from vla3d_ros.geometry import unproject_depth

    pts = [unproject_depth(depth[v], K[v], T[v]) for v in range(len(depth))]
    return np.concatenate([p[valid] for p, valid in pts])


def occluded_from_all(points, depth, K, T, tolerance: float = 0.003) -> np.ndarray:
    """(N,) bool: each point is hidden behind the observed surface (or out of view) in every camera."""
    hidden = np.ones(len(points), bool)
    size_h, size_w = depth.shape[1:]
    for v in range(len(depth)):
        p_cam = transform_points(invert_transform(T[v]), points)
        z = p_cam[:, 2]
        u = np.floor(K[v][0, 0] * p_cam[:, 0] / z + K[v][0, 2] + 0.5).astype(int)
        r = np.floor(K[v][1, 1] * p_cam[:, 1] / z + K[v][1, 2] + 0.5).astype(int)
        inside = (z > 0) & (u >= 0) & (u < size_w) & (r >= 0) & (r < size_h)
        seen = np.zeros(len(points), bool)
        observed = depth[v][r[inside], u[inside]]
        seen[inside] = ~(z[inside] > observed + tolerance)
        hidden &= ~seen
    return hidden
