"""Intrinsics from ChArUco views -> a camera_info YAML that ROS camera drivers load.

The YAML is camera_calibration_parsers' format (what `camera_info_manager` reads from a
`camera_info_url`, and what ROS' own `cameracalibrator` writes): image_width, image_height,
camera_name, camera_matrix, distortion_model, distortion_coefficients, rectification_matrix,
projection_matrix, each matrix as {rows, cols, data}.

Coverage is the share of the cells of a `COVERAGE_GRID` over the image that hold at least one
detected corner: corners only in the middle leave distortion and the principal point poorly
constrained, whatever the reprojection error says.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import yaml

from vla3d_ros.calibration.board import BoardDetection
from vla3d_ros.geometry import validate_intrinsics

COVERAGE_GRID = (8, 6)    # cells across x, y
MIN_VIEWS = 3
DistortionModel = Literal["plumb_bob", "none"]


@dataclass(frozen=True)
class IntrinsicsResult:
    """K (3, 3), plumb_bob distortion (5,) k1 k2 p1 p2 k3, image_size (width, height), the overall
    and per-view reprojection RMS in pixels, the image coverage in [0, 1] and the corner count."""

    K: np.ndarray
    distortion: np.ndarray
    image_size: tuple[int, int]
    rms: float
    per_view_rms: np.ndarray
    coverage: float
    num_corners: int

    @property
    def num_views(self) -> int:
        return len(self.per_view_rms)

    def summary(self) -> str:
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        return (f"fx {fx:.2f} fy {fy:.2f} cx {cx:.2f} cy {cy:.2f}; distortion "
                f"{np.array2string(self.distortion, precision=4)}; reprojection RMS {self.rms:.3f} px "
                f"(worst view {self.per_view_rms.max():.3f}); {self.num_views} views, {self.num_corners} corners, "
                f"coverage {self.coverage:.0%} of a {COVERAGE_GRID[0]}x{COVERAGE_GRID[1]} grid")


def coverage(detections: Sequence[BoardDetection], image_size: tuple[int, int],
             grid: tuple[int, int] = COVERAGE_GRID) -> float:
    """Share of grid cells over the (width, height) image holding at least one detected corner."""
    width, height = image_size
    hit = np.zeros(grid[::-1], bool)
    for detection in detections:
        cols = np.clip((detection.image_points[:, 0] + 0.5) * grid[0] // width, 0, grid[0] - 1).astype(int)
        rows = np.clip((detection.image_points[:, 1] + 0.5) * grid[1] // height, 0, grid[1] - 1).astype(int)
        hit[rows, cols] = True
    return float(hit.mean())


def calibrate_intrinsics(detections: Sequence[BoardDetection], *, distortion_model: DistortionModel = "plumb_bob",
                         ) -> IntrinsicsResult:
    """Calibrate one camera from its board detections (all from images of one size).

    `plumb_bob` estimates k1, k2, p1, p2 (k3 held at 0: a few views cannot separate it from the
    focal length); `none` assumes an undistorted (rectified or simulated) image.
    """
    detections = list(detections)
    if len(detections) < MIN_VIEWS:
        raise ValueError(f"intrinsics need at least {MIN_VIEWS} views with the board detected, got {len(detections)}")
    sizes = {d.image_size for d in detections}
    if len(sizes) != 1:
        raise ValueError(f"all images of one camera must have one size, got {sorted(sizes)}")
    if distortion_model not in ("plumb_bob", "none"):
        raise ValueError(f"distortion_model must be 'plumb_bob' or 'none', got {distortion_model!r}")
    image_size = sizes.pop()
    flags = cv2.CALIB_FIX_K3
    if distortion_model == "none":
        flags |= cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_ZERO_TANGENT_DIST
    objects = [d.object_points.astype(np.float32) for d in detections]
    images = [d.image_points.astype(np.float32) for d in detections]
    rms, K, distortion, rvecs, tvecs = cv2.calibrateCamera(objects, images, image_size, None, None, flags=flags)
    K = np.asarray(K, np.float64)
    distortion = np.asarray(distortion, np.float64).reshape(-1)[:5]
    per_view = []
    for obj, img, rvec, tvec in zip(objects, images, rvecs, tvecs):
        projected, _ = cv2.projectPoints(obj, rvec, tvec, K, distortion)
        per_view.append(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - img) ** 2, axis=1))))
    validate_intrinsics(K, *image_size)
    return IntrinsicsResult(K=K, distortion=distortion, image_size=image_size, rms=float(rms),
                            per_view_rms=np.asarray(per_view), coverage=coverage(detections, image_size),
                            num_corners=int(sum(len(d.ids) for d in detections)))


def _matrix(rows: int, cols: int, values) -> dict:
    return {"rows": rows, "cols": cols, "data": [float(v) for v in np.ravel(values)]}


def camera_info_yaml(result: IntrinsicsResult, camera_name: str) -> str:
    """The calibration as a camera_calibration_parsers YAML (see the module docstring)."""
    P = np.zeros((3, 4))
    P[:, :3] = result.K
    width, height = result.image_size
    data = {
        "image_width": int(width),
        "image_height": int(height),
        "camera_name": camera_name,
        "camera_matrix": _matrix(3, 3, result.K),
        "distortion_model": "plumb_bob",
        "distortion_coefficients": _matrix(1, 5, result.distortion),
        "rectification_matrix": _matrix(3, 3, np.eye(3)),
        "projection_matrix": _matrix(3, 4, P),
    }
    header = (f"# {camera_name}: reprojection RMS {result.rms:.3f} px over {result.num_views} views, "
              f"coverage {result.coverage:.0%} (vla3d calibrate intrinsics)\n")
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


@dataclass(frozen=True)
class CameraInfoFile:
    """What a camera_info YAML holds: K (3, 3), distortion (D,), its model and the image size."""

    camera_name: str
    K: np.ndarray
    distortion: np.ndarray
    distortion_model: str
    width: int
    height: int


def load_camera_info_yaml(text: str, source: str = "camera_info YAML") -> CameraInfoFile:
    """Read a camera_calibration_parsers YAML; ValueError naming the missing or bad key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{source}: not YAML: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping, got {data!r}")
    try:
        K = np.asarray(data["camera_matrix"]["data"], np.float64)
        distortion = np.asarray(data.get("distortion_coefficients", {}).get("data", []), np.float64)
        info = CameraInfoFile(camera_name=str(data.get("camera_name", "")), K=K.reshape(3, 3),
                              distortion=distortion, distortion_model=str(data.get("distortion_model", "plumb_bob")),
                              width=int(data["image_width"]), height=int(data["image_height"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{source}: missing or malformed key {error}") from None
    validate_intrinsics(info.K, info.width, info.height)
    return info
