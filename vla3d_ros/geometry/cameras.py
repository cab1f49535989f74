"""Pinhole cameras in the OpenCV convention (x right, y down, z forward), numpy.

Pixel centres are at integer coordinates: pixel (u, v) covers [u-0.5, u+0.5) x [v-0.5, v+0.5),
matching OpenCV and ROS CameraInfo.
"""
from __future__ import annotations

import numpy as np


def intrinsics_from_fovy(fovy_deg: float, width: int, height: int) -> np.ndarray:
    """(3, 3) K of a square-pixel camera with vertical field of view `fovy_deg` (MuJoCo's model).

    MuJoCo renders with the principal point at the image centre, i.e. between the two middle
    pixels, which is (W-1)/2 in OpenCV's integer-centred pixel coordinates.
    """
    if not 0.0 < fovy_deg < 180.0:
        raise ValueError(f"fovy must be in (0, 180) degrees, got {fovy_deg}")
    focal = 0.5 * height / np.tan(np.radians(fovy_deg) / 2.0)
    return np.array(
        [[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]]
    )


def validate_intrinsics(K: np.ndarray, width: int, height: int) -> None:
    """Raise ValueError with the offending value unless K is a usable pinhole matrix."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be 3x3, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError(f"K has non-finite entries: {K.tolist()}")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"K focal lengths must be > 0, got fx={K[0, 0]}, fy={K[1, 1]}")
    if not (0 <= K[0, 2] <= width and 0 <= K[1, 2] <= height):
        raise ValueError(
            f"K principal point ({K[0, 2]}, {K[1, 2]}) lies outside the {width}x{height} image"
        )
    if K[2, 2] != 1.0 or K[2, 0] != 0.0 or K[2, 1] != 0.0:
        raise ValueError(f"K last row must be [0, 0, 1], got {K[2].tolist()}")


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transform(s) (..., 4, 4) without a general matrix inverse."""
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    inverse = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    inverse[..., :3, :3] = Rt
    inverse[..., :3, 3:] = -Rt @ t
    inverse[..., 3, 3] = 1.0
    return inverse


def displace_camera(T_base_cam: np.ndarray, translation=(0.0, 0.0, 0.0), rotation: np.ndarray | None = None
                    ) -> np.ndarray:
    """(4, 4) pose of a camera at T_base_cam after it turned by `rotation` (3, 3, base frame) about
    its own centre and moved by `translation` (3,) metres (base frame): a knocked camera."""
    T = np.array(T_base_cam, dtype=np.float64)
    if rotation is not None:
        T[:3, :3] = np.asarray(rotation, np.float64) @ T[:3, :3]
    T[:3, 3] += np.asarray(translation, np.float64)
    return T


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply (4, 4) rigid transform T to (..., 3) points."""
    return points @ T[:3, :3].T + T[:3, 3]


def unproject_pixels(u: np.ndarray, v: np.ndarray, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points (..., 3) of pixels (u, v) at metric depth z (same shapes)."""
    x = (u - K[0, 2]) * depth / K[0, 0]
    y = (v - K[1, 2]) * depth / K[1, 1]
    return np.stack([x, y, depth], axis=-1)


def unproject_depth(
    depth: np.ndarray, K: np.ndarray, T_base_cam: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Point map of a depth image.

    Args:
        depth: (H, W) metres; NaN, inf and values <= 0 are invalid.
        K: (3, 3) intrinsics.
        T_base_cam: optional (4, 4); when given, points are returned in the base frame.
    Returns:
        points (H, W, 3) float32 (NaN where invalid) and valid (H, W) bool.
    """
    height, width = depth.shape
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    z = np.where(valid, depth, np.nan).astype(np.float64)
    points = unproject_pixels(u, v, z, K)
    if T_base_cam is not None:
        points = transform_points(T_base_cam, points)
    return points.astype(np.float32), valid


def project_points(
    points_base: np.ndarray, K: np.ndarray, T_base_cam: np.ndarray, min_depth: float = 1e-6
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project base-frame points (N, 3) into a camera.

    Returns:
        uv (N, 2) pixel coordinates, z (N,) depth along the optical axis, and in_front (N,) bool
        (z > min_depth). uv is only meaningful where in_front.
    """
    points_cam = transform_points(invert_transform(T_base_cam), points_base)
    z = points_cam[:, 2]
    in_front = z > min_depth
    safe_z = np.where(in_front, z, 1.0)
    uv = np.stack(
        [
            K[0, 0] * points_cam[:, 0] / safe_z + K[0, 2],
            K[1, 1] * points_cam[:, 1] / safe_z + K[1, 2],
        ],
        axis=-1,
    )
    return uv, z, in_front
