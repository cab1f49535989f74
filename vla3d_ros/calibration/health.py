"""Calibration health: does each camera's depth still agree with the others' through the extrinsics?

Every camera's depth image, put into the base frame with its current K and T_base_cam, is a
point cloud of the same workcell (table, objects, the arm). A camera knocked out of place since
its calibration produces a cloud that is rigidly offset from the others'. Each check:

1. each camera's cloud: depth (strided to at most `MAX_POINTS_PER_VIEW` pixels) unprojected,
   cropped to the configured region (the workcell: walls and floor are seen by few views),
   voxel down-sampled;
2. clouds are registered onto each other (damped point-to-plane ICP, `register`, coarse then
   fine correspondence distances), both restricted to the points the other side sees too: a point of camera A takes part only where it projects into camera B
   onto a depth within `VISIBILITY_TOLERANCE` (and vice versa). Without that restriction the edges
   of partially overlapping views pull ICP along the table by centimetres on a correct
   calibration. The correction D maps the camera's points onto the others': D T_base_cam is the
   pose that agrees with them. The apparent offset is the move of the camera centre under D
   (metres) and D's rotation angle;
3. attribution: registrations are pairwise; the cameras judged moved are the fewest that explain
   every disagreeing pair (a moved camera disagrees with all the others, which still agree with
   each other), after dropping a disagreement between two cameras that both agree with a third
   (a failed registration, not a move); a moved camera's offset is then estimated against the
   union of those that agree. With two cameras the two cannot be told apart: both are named.

A camera is WARN once the mean of its pairs' last `consecutive` checks is beyond a threshold
(sensor noise makes single checks jitter) and OK again as many checks after a recalibration. A
camera whose cloud overlaps the others too little (`MIN_OVERLAP`) is reported unchecked, never WARN.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.spatial import cKDTree

from vla3d_ros.geometry import invert_transform, project_points
from vla3d_ros.runtime.config import CalibrationMonitorConfig
from vla3d_ros.runtime.diagnostics import Level, Status

MAX_POINTS_PER_VIEW = 20_000   # pixels sampled per depth image (fewer made two-camera checks noisier)
MIN_POINTS = 200          # a cloud smaller than this (after cropping) is not checked
MIN_OVERLAP = 0.3         # share of the shared points with a partner within the fine distance
VISIBILITY_TOLERANCE = 0.05    # m between a projected point's depth and the depth the other camera sees
ICP_DISTANCES = (0.05, 0.015)  # m: coarse pass catches offsets of a few cm, the fine one settles it
NORMAL_NEIGHBOURS = 12    # points whose spread gives a target point's normal
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


def workcell_cloud(view: DepthView, config: CalibrationMonitorConfig) -> np.ndarray:
    """(N, 3) float64 base-frame points of a depth view, cropped to the region and voxel down-sampled."""
    height, width = view.depth.shape
    stride = max(1, int(np.ceil(np.sqrt(height * width / MAX_POINTS_PER_VIEW))))
    v, u = np.mgrid[0:height:stride, 0:width:stride]
    z = view.depth[::stride, ::stride].astype(np.float64)
    valid = np.isfinite(z) & (z > 0)
    u, v, z = u[valid], v[valid], z[valid]
    K = view.K
    camera_points = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], axis=-1)
    points = camera_points @ view.T_base_cam[:3, :3].T + view.T_base_cam[:3, 3]
    inside = np.all((points >= config.region_min) & (points <= config.region_max), axis=1)
    points = points[inside]
    if len(points) == 0:
        return points
    keys = np.floor(points / config.voxel).astype(np.int64)
    keys -= keys.min(axis=0)
    span = keys.max(axis=0) + 1
    _, first = np.unique((keys[:, 0] * span[1] + keys[:, 1]) * span[2] + keys[:, 2], return_index=True)
    return points[np.sort(first)]


def seen_by(points: np.ndarray, view: DepthView) -> np.ndarray:
    """(N,) bool: the base-frame points (N, 3) that `view` sees (its depth at their pixel matches
    their depth within `VISIBILITY_TOLERANCE`: in its image, not occluded, not beyond its range)."""
    uv, z, in_front = project_points(points, view.K, view.T_base_cam)
    height, width = view.depth.shape
    u, v = np.rint(uv[:, 0]).astype(np.int64), np.rint(uv[:, 1]).astype(np.int64)
    inside = in_front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    seen = np.full(len(points), np.nan)
    seen[inside] = view.depth[v[inside], u[inside]]
    with np.errstate(invalid="ignore"):
        return inside & (np.abs(seen - z) < VISIBILITY_TOLERANCE)


def _rotation_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def register(source: np.ndarray, target: np.ndarray, camera_centre: np.ndarray) -> CameraCheck:
    """Damped point-to-plane ICP of `source` (N, 3) onto `target` (M, 3); see the module docstring.

    Each Gauss-Newton step solves (J^T J + RIDGE * N * I) xi = -J^T r for the twist xi (rotation
    scaled by `ROTATION_SCALE` metres, about the source centroid): directions the shared geometry
    does not constrain (sliding along the table, turning about its normal) get no information and
    the ridge keeps them at zero, where plain ICP wanders by centimetres on a correct calibration.
    """
    tree = cKDTree(target)
    normals = _normals(target, tree)
    centroid = source.mean(axis=0)
    correction = np.eye(4)
    matched = np.zeros(len(source), bool)
    for distance in ICP_DISTANCES:
        for _ in range(ICP_ITERATIONS):
            moved = source @ correction[:3, :3].T + correction[:3, 3]
            gap, nearest = tree.query(moved, distance_upper_bound=distance)
            matched = np.isfinite(gap)
            if matched.sum() < MIN_POINTS:
                break
            q, n = moved[matched], normals[nearest[matched]]
            residual = np.einsum("ij,ij->i", q - target[nearest[matched]], n)
            J = np.hstack([np.cross(q - centroid, n) / ROTATION_SCALE, n])
            H = J.T @ J + RIDGE * len(q) * np.eye(6)
            xi = -np.linalg.solve(H, J.T @ residual)
            step = np.eye(4)
            step[:3, :3] = _rotation_matrix(xi[:3] / ROTATION_SCALE)
            step[:3, 3] = centroid + xi[3:] - step[:3, :3] @ centroid
            correction = step @ correction
            if np.linalg.norm(xi) < 1e-4:   # 0.1 mm: below the depth noise
                break
    return _offset(correction, camera_centre, float(matched.mean()))


def _normals(points: np.ndarray, tree: cKDTree) -> np.ndarray:
    """(N, 3) unit normals: the least-variance axis of each point's `NORMAL_NEIGHBOURS` nearest."""
    _, neighbours = tree.query(points, k=min(NORMAL_NEIGHBOURS, len(points)))
    patches = points[neighbours] - points[neighbours].mean(axis=1, keepdims=True)   # (N, k, 3)
    _, vectors = np.linalg.eigh(np.einsum("nki,nkj->nij", patches, patches))
    return vectors[:, :, 0]


def _rotation_matrix(rotation_vector: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(rotation_vector)
    if angle < 1e-12:
        return np.eye(3)
    k = rotation_vector / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def _offset(correction: np.ndarray, camera_centre: np.ndarray, overlap: float) -> CameraCheck:
    moved = correction[:3, :3] @ camera_centre + correction[:3, 3]
    return CameraCheck(correction=correction, translation=float(np.linalg.norm(moved - camera_centre)),
                       rotation_deg=_rotation_deg(correction[:3, :3]), overlap=overlap)


def _smallest_covers(pairs: list[tuple[str, str]]) -> set[str]:
    """Union of the smallest sets of names that hold a member of every pair (brute force: a
    workcell has a handful of cameras)."""
    names = sorted({name for pair in pairs for name in pair})
    for size in range(len(names) + 1):
        covers = [set(c) for c in combinations(names, size) if all(set(pair) & set(c) for pair in pairs)]
        if covers:
            return set().union(*covers)
    return set()


class CalibrationHealthMonitor:
    """Checks the cameras' mutual consistency (module docstring) and keeps their WARN state.

    A pair of cameras disagrees when the mean of its last `config.consecutive` registrations is
    beyond a threshold (depth noise makes single registrations jitter by ~1 deg; a moved camera
    stays moved), so a camera is WARN from its `consecutive`-th check after the move on, and OK
    again `consecutive` checks after it is recalibrated.
    """

    def __init__(self, config: CalibrationMonitorConfig) -> None:
        self.config = config
        self.last: dict[str, CameraCheck] = {}
        self.last_check: float | None = None
        self.moved: set[str] = set()
        self.since: dict[str, float] = {}      # camera -> when its current WARN started
        self._history: dict[tuple[str, str], deque[CameraCheck]] = {}
        self._unchecked: dict[str, str] = {}

    def _beyond(self, translation: float, rotation_deg: float) -> bool:
        return translation > self.config.warn_translation or rotation_deg > self.config.warn_rotation_deg

    def _score(self, check: CameraCheck) -> float:
        """Offset in units of the thresholds: > 1 on either axis means beyond."""
        return max(check.translation / self.config.warn_translation, check.rotation_deg / self.config.warn_rotation_deg)

    def _register_onto(self, name: str, partners: list[str], clouds: Mapping[str, np.ndarray],
                       views: Mapping[str, DepthView]) -> tuple[CameraCheck | None, CameraCheck | None]:
        """`name`'s shared points registered onto its partners' shared points: the check of `name`
        and, for a single partner, the partner's check from the inverse correction."""
        shared = np.zeros(len(clouds[name]), bool)
        for partner in partners:
            shared |= seen_by(clouds[name], views[partner])
        target = np.concatenate([clouds[p][seen_by(clouds[p], views[name])] for p in partners])
        if shared.sum() < MIN_POINTS or len(target) < MIN_POINTS:
            return None, None
        check = register(clouds[name][shared], target, views[name].T_base_cam[:3, 3])
        if not check.checked:
            return None, None
        centre = views[partners[0]].T_base_cam[:3, 3]
        return check, _offset(invert_transform(check.correction), centre, check.overlap)

    def check(self, now: float, views: Mapping[str, DepthView]) -> dict[str, CameraCheck]:
        """One check of every camera; updates `moved` and returns each camera's check.

        Pairs of overlapping cameras are registered; the cameras judged moved are the smallest
        set that explains every disagreeing pair (each such pair holds one of them); ties are all
        named (two cameras that disagree: both). A moved camera's check is its registration onto
        the union of the cameras that agree; another camera's is its best agreement. Cameras that
        could not be checked are left out and listed in the status."""
        clouds, self._unchecked = {}, {}
        for name, view in views.items():
            cloud = workcell_cloud(view, self.config)
            if len(cloud) < MIN_POINTS:
                self._unchecked[name] = f"{len(cloud)} depth points in the region (< {MIN_POINTS})"
            else:
                clouds[name] = cloud
        pairs: dict[tuple[str, str], tuple[CameraCheck, CameraCheck]] = {}
        for pair in combinations(sorted(clouds), 2):
            first, second = self._register_onto(pair[0], [pair[1]], clouds, views)
            if first is None:
                self._history.pop(pair, None)
                continue
            pairs[pair] = (first, second)
            self._history.setdefault(pair, deque(maxlen=self.config.consecutive)).append(first)
        disagreeing = [pair for pair in pairs if len(self._history[pair]) == self.config.consecutive
                       and self._beyond(np.mean([c.translation for c in self._history[pair]]),
                                        np.mean([c.rotation_deg for c in self._history[pair]]))]
        agreeing_pairs = set(pairs) - set(disagreeing)

        def agree(a: str, b: str) -> bool:
            return tuple(sorted((a, b))) in agreeing_pairs
        # Two cameras that both agree with a third cannot both be right and disagree with each
        # other: their registration is the one that failed (little shared structure), not a move.
        disagreeing = [(a, b) for a, b in disagreeing if not any(agree(a, c) and agree(b, c) for c in clouds)]
        moved = _smallest_covers(disagreeing)
        checks = {}
        for name in clouds:
            found = [c[pair.index(name)] for pair, c in pairs.items() if name in pair]
            if not found:
                self._unchecked[name] = "too little overlap with the other cameras' views"
                continue
            checks[name] = min(found, key=self._score)   # its best agreement
            agreeing = [other for other in clouds if other not in moved and tuple(sorted((name, other))) in pairs]
            if name in moved and agreeing:
                refined, _ = self._register_onto(name, agreeing, clouds, views)
                checks[name] = refined or checks[name]
        self.since = {name: self.since.get(name, now) for name in moved}
        self.moved, self.last, self.last_check = moved, checks, now
        return checks

    def miscalibrated(self) -> dict[str, CameraCheck]:
        """Cameras in WARN now, with their last check."""
        return {name: self.last[name] for name in sorted(self.moved) if name in self.last}

    def describe(self) -> str:
        """One line per camera in WARN, for logs and the hold reason."""
        return "; ".join(f"camera {name!r} appears moved by {100 * c.translation:.1f} cm / {c.rotation_deg:.1f} deg "
                         f"against the other cameras since its calibration"
                         for name, c in self.miscalibrated().items())

    def status(self) -> Status:
        """The diagnostics status `calibration_health`."""
        if self.last_check is None:
            return Status("calibration_health", Level.STALE, "no check yet")
        values = {f"{name}.offset": f"{100 * c.translation:.2f} cm, {c.rotation_deg:.2f} deg, overlap {c.overlap:.0%}"
                  for name, c in self.last.items()}
        values.update({f"{name}.unchecked": why for name, why in self._unchecked.items()})
        values.update({f"{name}.warn_since": f"{since:.3f}" for name, since in self.since.items()})
        if self.miscalibrated():
            return Status("calibration_health", Level.WARN,
                          self.describe() + ": recalibrate (vla3d calibrate handeye) or restore the mount", values)
        if not self.last:
            return Status("calibration_health", Level.OK, "not checked: fewer than two cameras with depth in the region",
                          values)
        return Status("calibration_health", Level.OK, "cameras agree", values)
