"""Rigid registration of depth points onto a surface, shared by the cross-view check (`health`)
and the arm check (`arm_check`): the depth view, the damped point-to-plane ICP and the apparent
offset of a camera under a correction."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.spatial import cKDTree

MIN_POINTS = 200          # a cloud smaller than this (after cropping) is not checked
MIN_OVERLAP = 0.3         # share of the shared points with a partner within the fine distance
VISIBILITY_TOLERANCE = 0.05    # m between a projected point's depth and the depth the other camera sees
ICP_DISTANCES = (0.05, 0.015)  # m: coarse pass catches offsets of a few cm, the fine one settles it
ICP_ITERATIONS = 10       # per correspondence distance (a step below 0.1 mm ends it earlier)
ROTATION_SCALE = 0.3      # m: a rotation of 1/ROTATION_SCALE rad weighs like a 1 m translation
RIDGE = 0.01              # damping per matched point (J^T J grows with the point count)


@dataclass(frozen=True)
class DepthView:
    """One camera at one instant: depth (H, W) metres (NaN / <= 0 invalid), K (3, 3), T_base_cam (4, 4)."""

    depth: np.ndarray
    K: np.ndarray
    T_base_cam: np.ndarray


@dataclass(frozen=True)
class CameraCheck:
    """One camera's registration onto the others: the correction (4, 4) in the base frame, the
    apparent move of the camera centre (m) and turn (deg), and the overlap share in [0, 1]."""

    correction: np.ndarray
    translation: float
    rotation_deg: float
    overlap: float

    @property
    def checked(self) -> bool:
        return self.overlap >= MIN_OVERLAP


def _rotation_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


class Registration(NamedTuple):
    """`point_to_plane_icp`'s result: the (4, 4) correction, the share of source points matched in
    the last step, and the information of the least constrained direction of the last step: the
    smallest eigenvalue of J^T J / matches (0 where nothing matched; rotation scaled by
    `ROTATION_SCALE`). Near 0, the matches leave a direction unconstrained (a flat face fixes only
    three of six), and the correction there is the drift of biased matches, not a measurement."""

    correction: np.ndarray
    share: float
    weakest: float


def point_to_plane_icp(sources: Sequence[np.ndarray], targets: Sequence[tuple[cKDTree, np.ndarray]],
                       min_points: int = MIN_POINTS, pivot: np.ndarray | None = None,
                       min_information: float = 0.0) -> Registration:
    """One rigid (4, 4) correction that moves every source (N_i, 3) onto its own target (a KD-tree
    of (M_i, 3) points and their (M_i, 3) unit normals), the share of source points matched in
    the last step, and how well the last step's matches constrain the pose (`Registration`).
    Several source/target pairs (one camera at several instants) stack their equations; coarse
    then fine correspondence distances (`ICP_DISTANCES`).

    Each Gauss-Newton step solves (J^T J + RIDGE * N * I) xi = -J^T r for the twist xi (rotation
    scaled by `ROTATION_SCALE` metres, about `pivot` (3,), by default the sources' centroid):
    directions the geometry does not constrain (sliding along the table, turning about its normal)
    get no information and the ridge keeps them at zero, where plain ICP wanders by centimetres on
    a correct calibration. The ridge favours the smallest twist about the pivot, so the pivot
    decides which of two equivalent explanations is reported. Noisy normals give those directions
    a little information all the same; `min_information` > 0 leaves every direction whose
    information (eigenvalue of J^T J / matches) is below it out of the step altogether.
    """
    centroid = np.concatenate(sources).mean(axis=0) if pivot is None else np.asarray(pivot, np.float64)
    correction = np.eye(4)
    share, weakest = 0.0, 0.0
    for distance in ICP_DISTANCES:
        for _ in range(ICP_ITERATIONS):
            rows, residuals = [], []
            for source, (tree, normals) in zip(sources, targets):
                moved = source @ correction[:3, :3].T + correction[:3, 3]
                gap, nearest = tree.query(moved, distance_upper_bound=distance)
                matched = np.isfinite(gap)
                q, n = moved[matched], normals[nearest[matched]]
                residuals.append(np.einsum("ij,ij->i", q - tree.data[nearest[matched]], n))
                rows.append(np.hstack([np.cross(q - centroid, n) / ROTATION_SCALE, n]))
            J, residual = np.concatenate(rows), np.concatenate(residuals)
            share = len(J) / sum(len(source) for source in sources)
            if len(J) < min_points:
                break
            information, directions = np.linalg.eigh(J.T @ J / len(J))
            weakest = float(information[0])
            gradient = directions.T @ (J.T @ residual / len(J))
            # (J^T J + RIDGE N I) xi = -J^T r, solved in the eigenbasis of J^T J
            xi = -directions @ np.where(information >= min_information, gradient / (information + RIDGE), 0.0)
            step = np.eye(4)
            step[:3, :3] = _rotation_matrix(xi[:3] / ROTATION_SCALE)
            step[:3, 3] = centroid + xi[3:] - step[:3, :3] @ centroid
            correction = step @ correction
            if np.linalg.norm(xi) < 1e-4:   # 0.1 mm: below the depth noise
                break
    return Registration(correction, share, weakest)


def fit_at(sources: Sequence[np.ndarray], targets: Sequence[tuple[cKDTree, np.ndarray]],
           correction: np.ndarray) -> tuple[float, float]:
    """How well `correction` (4, 4) puts the sources onto their targets at the fine correspondence
    distance: the median absolute point-to-plane residual of the matched points (m; inf where none
    match) and the share of source points matched."""
    residuals, total = [], 0
    for source, (tree, normals) in zip(sources, targets):
        moved = source @ correction[:3, :3].T + correction[:3, 3]
        gap, nearest = tree.query(moved, distance_upper_bound=ICP_DISTANCES[-1])
        matched = np.isfinite(gap)
        residuals.append(np.einsum("ij,ij->i", moved[matched] - tree.data[nearest[matched]], normals[nearest[matched]]))
        total += len(source)
    residual = np.abs(np.concatenate(residuals))
    return (float(np.median(residual)) if len(residual) else float("inf")), len(residual) / max(total, 1)


def _rotation_matrix(rotation_vector: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(rotation_vector)
    if angle < 1e-12:
        return np.eye(3)
    k = rotation_vector / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def offset_check(correction: np.ndarray, camera_centre: np.ndarray, overlap: float) -> CameraCheck:
    """The check of a camera centred at `camera_centre` (3,) whose points the (4, 4) base-frame
    `correction` moves onto the truth; `overlap` is the share of its points that matched."""
    moved = correction[:3, :3] @ camera_centre + correction[:3, 3]
    return CameraCheck(correction=correction, translation=float(np.linalg.norm(moved - camera_centre)),
                       rotation_deg=_rotation_deg(correction[:3, :3]), overlap=overlap)
