"""Hand-eye calibration: where a camera is, from board poses seen by it and end-effector poses.

Two mounts, one equation. With A_i the robot's pose at sample i and B_i = T_cam_board seen then:
- eye_to_hand (a camera fixed in the world, the board held by the gripper):
  X = T_base_cam, Y = T_ee_board, A_i = T_base_ee_i;
- eye_in_hand (a camera on the wrist, the board fixed in the world):
  X = T_ee_cam, Y = T_base_board, A_i = T_ee_base_i = inv(T_base_ee_i).
Both satisfy  X B_i = A_i Y.

OpenCV's `calibrateHandEye` (Park by default) gives the closed-form X; Y follows by averaging
A_i^-1 X B_i. Then X and Y are refined together by minimising the reprojection error of every
detected corner (the robot-world-hand-eye formulation, solved with scipy's least squares), which
is what a closed form fed with noisy board poses leaves on the table. Residuals: the spread of the
per-sample Y_i around Y (metres, degrees) and the final reprojection RMS (pixels).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from scipy.optimize import least_squares

from vla3d_ros.calibration.board import BoardDetection, pose_matrix
from vla3d_ros.geometry import invert_transform, matrix_to_quaternion_xyzw

Mount = Literal["eye_to_hand", "eye_in_hand"]
MOUNTS = ("eye_to_hand", "eye_in_hand")
MIN_SAMPLES = 4
MIN_ROTATION_SPREAD_DEG = 10.0   # below it the hand-eye rotation is barely observable
HAND_EYE_METHODS = {"park": cv2.CALIB_HAND_EYE_PARK, "tsai": cv2.CALIB_HAND_EYE_TSAI,
                    "horaud": cv2.CALIB_HAND_EYE_HORAUD, "andreff": cv2.CALIB_HAND_EYE_ANDREFF,
                    "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS}


@dataclass(frozen=True)
class HandEyeSample:
    """One pose of the robot: T_base_ee (4, 4) and the board seen by the camera then."""

    T_base_ee: np.ndarray
    detection: BoardDetection


@dataclass(frozen=True)
class HandEyeResult:
    """X: T_base_cam (eye_to_hand) or T_ee_cam (eye_in_hand); Y: T_ee_board or T_base_board.

    Residuals: per-sample deviation of A_i^-1 X B_i from Y (translation_residuals (N,) m,
    rotation_residuals (N,) deg) and the reprojection RMS (px) of all corners through X and Y.
    """

    mount: Mount
    X: np.ndarray
    Y: np.ndarray
    translation_residuals: np.ndarray
    rotation_residuals: np.ndarray
    reprojection_rms: float

    @property
    def num_samples(self) -> int:
        return len(self.translation_residuals)

    def summary(self) -> str:
        what = "T_base_cam" if self.mount == "eye_to_hand" else "T_ee_cam"
        return (f"{self.mount}: {what} xyz {np.array2string(self.X[:3, 3], precision=4)} m; residuals over "
                f"{self.num_samples} samples: {1000 * _rms(self.translation_residuals):.2f} mm, "
                f"{_rms(self.rotation_residuals):.3f} deg RMS (worst {1000 * self.translation_residuals.max():.2f} mm, "
                f"{self.rotation_residuals.max():.3f} deg); reprojection RMS {self.reprojection_rms:.3f} px")


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle (degrees) of a (3, 3) rotation."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def _mean_transform(transforms: np.ndarray) -> np.ndarray:
    """Chordal mean of (N, 4, 4) rigid transforms (rotation projected back onto SO(3))."""
    U, _, Vt = np.linalg.svd(transforms[:, :3, :3].sum(axis=0))
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = transforms[:, :3, 3].mean(axis=0)
    return T


def _robot_poses(samples: Sequence[HandEyeSample], mount: Mount) -> np.ndarray:
    """(N, 4, 4) A_i of the module docstring."""
    T_base_ee = np.stack([np.asarray(s.T_base_ee, np.float64) for s in samples])
    return T_base_ee if mount == "eye_to_hand" else invert_transform(T_base_ee)


def rotation_spread_deg(T: np.ndarray) -> float:
    """Largest relative rotation (degrees) between any two of (N, 4, 4) poses."""
    return max((rotation_angle_deg(T[i, :3, :3].T @ T[j, :3, :3])
                for i in range(len(T)) for j in range(i + 1, len(T))), default=0.0)


def solve_hand_eye(samples: Sequence[HandEyeSample], K: np.ndarray, distortion: np.ndarray = np.zeros(5), *,
                   mount: Mount, method: str = "park", refine: bool = True) -> HandEyeResult:
    """X and Y (see the module docstring) from >= `MIN_SAMPLES` samples of one camera with intrinsics K."""
    if mount not in MOUNTS:
        raise ValueError(f"mount must be one of {MOUNTS}, got {mount!r}")
    if method not in HAND_EYE_METHODS:
        raise ValueError(f"method must be one of {sorted(HAND_EYE_METHODS)}, got {method!r}")
    samples = list(samples)
    if len(samples) < MIN_SAMPLES:
        raise ValueError(f"hand-eye needs at least {MIN_SAMPLES} samples with the board detected, got {len(samples)}")
    K = np.asarray(K, np.float64)
    distortion = np.asarray(distortion, np.float64)
    A = _robot_poses(samples, mount)
    spread = rotation_spread_deg(A)
    if spread < MIN_ROTATION_SPREAD_DEG:
        raise ValueError(f"the end-effector rotations span only {spread:.1f} deg; hand-eye needs rotations about "
                         f"at least two axes spanning >= {MIN_ROTATION_SPREAD_DEG:.0f} deg")
    B = np.stack([s.detection.pose(K, distortion)[0] for s in samples])
    # calibrateHandEye solves G_i X B_i = const for X ("cam2gripper") given G_i ("gripper2base") and
    # B_i ("target2cam"); here G_i = A_i^-1: T_base_ee for eye-in-hand, base2gripper for eye-to-hand.
    G = invert_transform(A)
    R_x, t_x = cv2.calibrateHandEye(list(G[:, :3, :3]), list(G[:, :3, 3]), list(B[:, :3, :3]), list(B[:, :3, 3]),
                                    method=HAND_EYE_METHODS[method])
    X = np.eye(4)
    X[:3, :3], X[:3, 3] = R_x, np.ravel(t_x)
    Y = _mean_transform(invert_transform(A) @ X @ B)
    if refine:
        X, Y = _refine(samples, A, X, Y, K, distortion)
    return _result(samples, mount, A, X, Y, K, distortion)


def _params(T: np.ndarray) -> np.ndarray:
    return np.concatenate([cv2.Rodrigues(T[:3, :3])[0].ravel(), T[:3, 3]])


def _from_params(p: np.ndarray) -> np.ndarray:
    return pose_matrix(p[:3], p[3:])


def _reprojection_errors(samples: Sequence[HandEyeSample], A: np.ndarray, X: np.ndarray, Y: np.ndarray,
                         K: np.ndarray, distortion: np.ndarray) -> np.ndarray:
    """(sum N_i * 2,) pixel errors of every corner, board posed at B_i = X^-1 A_i Y."""
    errors = []
    X_inv = invert_transform(X)
    for sample, A_i in zip(samples, A):
        B = X_inv @ A_i @ Y
        projected, _ = cv2.projectPoints(sample.detection.object_points, cv2.Rodrigues(B[:3, :3])[0], B[:3, 3],
                                         K, distortion)
        errors.append((projected.reshape(-1, 2) - sample.detection.image_points).ravel())
    return np.concatenate(errors)


def _refine(samples, A, X, Y, K, distortion) -> tuple[np.ndarray, np.ndarray]:
    def residuals(p: np.ndarray) -> np.ndarray:
        return _reprojection_errors(samples, A, _from_params(p[:6]), _from_params(p[6:]), K, distortion)

    solution = least_squares(residuals, np.concatenate([_params(X), _params(Y)]), method="lm")
    return _from_params(solution.x[:6]), _from_params(solution.x[6:])


def _result(samples, mount, A, X, Y, K, distortion) -> HandEyeResult:
    B = np.stack([s.detection.pose(K, distortion)[0] for s in samples])
    Y_i = invert_transform(A) @ X @ B
    translation = np.linalg.norm(Y_i[:, :3, 3] - Y[:3, 3], axis=1)
    rotation = np.array([rotation_angle_deg(Y[:3, :3].T @ R) for R in Y_i[:, :3, :3]])
    errors = _reprojection_errors(samples, A, X, Y, K, distortion).reshape(-1, 2)
    return HandEyeResult(mount=mount, X=X, Y=Y, translation_residuals=translation, rotation_residuals=rotation,
                         reprojection_rms=float(np.sqrt(np.mean(np.sum(errors ** 2, axis=1)))))


def extrinsics_block(T: np.ndarray) -> dict:
    """The runtime YAML's `extrinsics:` mapping ({xyz, quat_xyzw}) of a (4, 4) transform."""
    return {"xyz": [round(float(v), 6) for v in T[:3, 3]],
            "quat_xyzw": [round(float(v), 8) for v in matrix_to_quaternion_xyzw(T[:3, :3])]}


def static_transform_snippet(T: np.ndarray, parent_frame: str, child_frame: str) -> str:
    """A static_transform_publisher command and the same as a launch_ros Node (T: child -> parent)."""
    (x, y, z), (qx, qy, qz, qw) = T[:3, 3], matrix_to_quaternion_xyzw(T[:3, :3])
    arguments = (f"--x {x:.6f} --y {y:.6f} --z {z:.6f} --qx {qx:.8f} --qy {qy:.8f} --qz {qz:.8f} --qw {qw:.8f} "
                 f"--frame-id {parent_frame} --child-frame-id {child_frame}")
    launch_arguments = ", ".join(f"'{a}'" for a in arguments.split())
    return (f"# shell\nros2 run tf2_ros static_transform_publisher {arguments}\n"
            f"# launch file (launch_ros.actions.Node)\n"
            f"Node(package='tf2_ros', executable='static_transform_publisher', "
            f"name='{child_frame}_calibration',\n     arguments=[{launch_arguments}])\n")
