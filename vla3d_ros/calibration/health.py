"""Calibration health: does each camera's depth still agree with the others' through the extrinsics?

Every camera's depth image, put into the base frame with its current K and T_base_cam, is a
point cloud of the same workcell (table, objects, the arm). A camera knocked out of place since
its calibration produces a cloud that is rigidly offset from the others'. Each check:

1. each camera's cloud: depth (strided to at most `MAX_POINTS_PER_VIEW` pixels) unprojected,
   cropped to the configured region (the workcell: walls and floor are seen by few views),
   voxel down-sampled;
2. clouds are registered onto each other (damped point-to-plane ICP, `register`, coarse then
   fine correspondence distances), both restricted to the points the other side sees too: a point
   of camera A takes part only where its surface faces camera B and it projects into camera B onto
   a depth within `VISIBILITY_TOLERANCE` (and vice versa; `WorkcellCloud.seen_by`). Without that
   restriction the edges of partially overlapping views pull ICP along the table by centimetres on a correct
   calibration. The correction D maps the camera's points onto the others': D T_base_cam is the
   pose that agrees with them. The apparent offset is the move of the camera centre under D
   (metres) and D's rotation angle;
3. attribution: registrations are pairwise; the cameras judged moved are the fewest that explain
   every disagreeing pair (a moved camera disagrees with all the others, which still agree with
   each other), after dropping a disagreement between two cameras that both agree with a third
   (a failed registration, not a move); a moved camera's offset is then estimated against the
   union of those that agree (where none does, all its partners), and it stays named only if that
   registration confirms it (`CONFIRM_SCORE`). With two cameras the two cannot be told apart: both
   are named.

Given the arm's surface at the images' instant, the arm is taken out of the clouds
(`ARM_CLEARANCE`) and each camera is also checked against the arm
(`arm_check`: 3D structure whose pose the joint states give without any camera); see
`CalibrationHealthMonitor` for how the two checks are combined.

A pair disagrees once the mean of its last `consecutive` registrations puts each of its two
cameras beyond a threshold (sensor noise makes single checks jitter; `_pair_disagrees`), so a
camera is WARN from its `consecutive`-th check after a move and OK again as many checks after a
recalibration. A camera whose cloud overlaps the others too little (`registration.MIN_OVERLAP`)
is reported unchecked, never WARN.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from itertools import combinations
from typing import NamedTuple

import numpy as np
from scipy.spatial import cKDTree

from vla3d_ros.calibration.arm_check import ArmCheck, ArmSurfaceCheck, SurfaceSamples
from vla3d_ros.calibration.registration import (
    MIN_POINTS,
    VISIBILITY_TOLERANCE,
    CameraCheck,
    DepthView,
    offset_check,
    point_to_plane_icp,
)
from vla3d_ros.geometry import invert_transform, project_points
from vla3d_ros.runtime.config import CalibrationMonitorConfig
from vla3d_ros.runtime.diagnostics import Level, Status

# m: where the arm's surface is known, cloud points this near it are left to the arm check. Two
# cameras see different sides of a link a few cm thick, and the visibility test cannot tell them
# apart: with the hand down among the objects, front and side disagreed by 1.4-1.9 cm / 1.5 deg
# on their true calibrations (false WARNs).
ARM_CLEARANCE = 0.04
# share of the thresholds (`_score`) a camera's registration onto the union of the cameras that
# agree must reach to confirm the pairs' verdict. The pairs decide on the mean of `consecutive`
# registrations onto one partner each; with the hand down among the objects that mean once named
# the wrist while its registration onto both other cameras said 0.1 cm (1 false WARN in 600
# checks). A camera really moved beyond the thresholds registers near its offset onto the union
# (more shared structure than any pair); half the thresholds leaves room for one check's jitter.
CONFIRM_SCORE = 0.5
# information (`registration.point_to_plane_icp`) below which a direction of a registration is not
# measured (no step along it). Bare table seen at a slant (the wrist camera looking across the
# table: a few hundred shared points) gives the slides along it and the turn about its normal
# 2e-4 to 1e-3 from the noise of its normals, and the damped step drifted 1.5-7 cm / 2-3 deg there
# on the true calibration (arm hovering). 0.005 removed that drift too but read the front camera's
# 2 cm slide along x as 1.1-1.2 cm (test_a_moved_camera_is_named_with_its_offset): the objects
# give that direction a few 1e-3.
UNMEASURED_INFORMATION = 0.002
MAX_POINTS_PER_VIEW = 20_000   # pixels sampled per depth image (fewer made two-camera checks noisier)
NORMAL_NEIGHBOURS = 12    # points whose spread gives a target point's normal


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


class WorkcellCloud(NamedTuple):
    """One camera's `workcell_cloud` (N, 3) and its unit normals (N, 3), turned towards that camera."""

    points: np.ndarray
    normals: np.ndarray

    @classmethod
    def of(cls, points: np.ndarray, camera_centre: np.ndarray) -> WorkcellCloud:
        normals = _normals(points, cKDTree(points))
        normals *= np.where(np.einsum("ij,ij->i", normals, camera_centre - points) < 0, -1.0, 1.0)[:, None]
        return cls(points, normals)

    def seen_by(self, view: DepthView) -> np.ndarray:
        """(N,) bool: the points that `view` sees: they face its centre and its depth at their
        pixel matches theirs within `VISIBILITY_TOLERANCE` (in its image, not occluded, not beyond
        its range). Without the facing test, the far side of an object a few cm across (within the
        tolerance of its near side) counted as seen by a camera on the other side: ~100 such points
        pulled the side-wrist registration by 2-4.5 cm / 1.7-3.2 deg on the true calibration, beyond
        the thresholds in 13 % (arm hovering) to 21 % (at work) of single checks."""
        facing = np.einsum("ij,ij->i", self.normals, view.T_base_cam[:3, 3] - self.points) > 0
        uv, z, in_front = project_points(self.points, view.K, view.T_base_cam)
        height, width = view.depth.shape
        u, v = np.rint(uv[:, 0]).astype(np.int64), np.rint(uv[:, 1]).astype(np.int64)
        inside = facing & in_front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        seen = np.full(len(self.points), np.nan)
        seen[inside] = view.depth[v[inside], u[inside]]
        with np.errstate(invalid="ignore"):
            return inside & (np.abs(seen - z) < VISIBILITY_TOLERANCE)


def register(source: np.ndarray, target: WorkcellCloud, camera_centre: np.ndarray) -> CameraCheck:
    """Damped point-to-plane ICP of `source` (N, 3) onto `target` (`point_to_plane_icp`); see the
    module docstring."""
    correction, share, _ = point_to_plane_icp([source], [(cKDTree(target.points), target.normals)],
                                              min_information=UNMEASURED_INFORMATION)
    return offset_check(correction, camera_centre, share)


def _normals(points: np.ndarray, tree: cKDTree) -> np.ndarray:
    """(N, 3) unit normals: the least-variance axis of each point's `NORMAL_NEIGHBOURS` nearest."""
    _, neighbours = tree.query(points, k=min(NORMAL_NEIGHBOURS, len(points)))
    patches = points[neighbours] - points[neighbours].mean(axis=1, keepdims=True)   # (N, k, 3)
    _, vectors = np.linalg.eigh(np.einsum("nki,nkj->nij", patches, patches))
    return vectors[:, :, 0]


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
    """Checks the cameras' mutual consistency (module docstring) and, given the arm's surface, each
    camera against the arm (`arm_check`); keeps their WARN state.

    A pair of cameras disagrees when the mean of its last `config.consecutive` registrations is
    beyond a threshold at both cameras (`_pair_disagrees`; depth noise makes single registrations
    jitter by ~1 deg; a moved camera stays moved), so a camera is WARN from its `consecutive`-th
    check after the move on, and OK again `consecutive` checks after it is recalibrated.

    The two checks are combined per camera as: WARN if the arm check (over a full window of
    `consecutive` instants) is beyond its thresholds (`arm_warn_*`), or the cross-view check names it; where the
    cross-view check names several cameras (two cameras, or an ambiguous cover), those the arm
    check clears (checked, within the thresholds) are dropped as long as one stays named. A union
    rather than "the arm check where it sees enough": each check sees offsets the other cannot
    (the cross-view check a camera's height and tilt against the table, which the arm seen by one
    camera constrains weakly; the arm check slides along the table and turns about the vertical),
    and the arm check alone attributes a move to one camera without a partner.
    """

    def __init__(self, config: CalibrationMonitorConfig) -> None:
        self.config = config
        self.last: dict[str, CameraCheck] = {}
        self.last_check: float | None = None
        self.moved: set[str] = set()
        self._arm_moved: set[str] = set()
        self.since: dict[str, float] = {}      # camera -> when its current WARN started
        # pair -> its last registrations, each as (first camera's check, second camera's check)
        self._history: dict[tuple[str, str], deque[tuple[CameraCheck, CameraCheck]]] = {}
        self._unchecked: dict[str, str] = {}
        self.arm = ArmSurfaceCheck(config)
        self.last_arm: dict[str, ArmCheck] = {}

    def _beyond(self, translation: float, rotation_deg: float) -> bool:
        return translation > self.config.warn_translation or rotation_deg > self.config.warn_rotation_deg

    def _score(self, check: CameraCheck) -> float:
        """Offset in units of the thresholds: > 1 on either axis means beyond."""
        return max(check.translation / self.config.warn_translation, check.rotation_deg / self.config.warn_rotation_deg)

    def _pair_disagrees(self, history: deque[tuple[CameraCheck, CameraCheck]]) -> bool:
        """Whether a pair's last registrations, averaged, put each of its two cameras beyond the
        thresholds. One correction moves either camera onto the other; the pair cannot tell which
        moved, so it shows a move beyond the thresholds only where neither explanation stays within
        them. A turn reads the same about both centres, a slide the same at both, but rotation noise
        reads as translation times the lever arm: at a fixed camera a metre or more from the points
        it shares with the wrist camera. Reading the fixed camera's centre alone, the arm hovering
        (`vla3d calibrate monitor-eval --episodes 20 --steps 30 --steps-between 10 --translations ""
        --rotations "" --arm-motion random`: 600 checks) raised 16 WARN; reading both, 9 (the rest:
        `WorkcellCloud.seen_by`, `UNMEASURED_INFORMATION`, `registration.fit_at` in the arm check)."""
        return all(self._beyond(np.mean([checks[side].translation for checks in history]),
                                np.mean([checks[side].rotation_deg for checks in history])) for side in (0, 1))

    def _register_onto(self, name: str, partners: list[str], clouds: Mapping[str, WorkcellCloud],
                       views: Mapping[str, DepthView]) -> tuple[CameraCheck | None, CameraCheck | None]:
        """`name`'s shared points registered onto its partners' shared points: the check of `name`
        and, for a single partner, the partner's check from the inverse correction."""
        shared = np.zeros(len(clouds[name].points), bool)
        for partner in partners:
            shared |= clouds[name].seen_by(views[partner])
        seen = [clouds[p].seen_by(views[name]) for p in partners]
        target = WorkcellCloud(np.concatenate([clouds[p].points[s] for p, s in zip(partners, seen)]),
                               np.concatenate([clouds[p].normals[s] for p, s in zip(partners, seen)]))
        if shared.sum() < MIN_POINTS or len(target.points) < MIN_POINTS:
            return None, None
        check = register(clouds[name].points[shared], target, views[name].T_base_cam[:3, 3])
        if not check.checked:
            return None, None
        centre = views[partners[0]].T_base_cam[:3, 3]
        return check, offset_check(invert_transform(check.correction), centre, check.overlap)

    def check(self, now: float, views: Mapping[str, DepthView],
              arm: SurfaceSamples | None = None) -> dict[str, CameraCheck]:
        """One check of every camera; updates `moved` and returns each camera's cross-view check
        (the arm checks are in `last_arm`). `arm`: the arm's surface samples in the base frame at
        the images' instant (`ArmSurface.posed`), None where the link poses are not known.

        Pairs of overlapping cameras are registered; the cameras judged moved are the smallest
        set that explains every disagreeing pair (each such pair holds one of them); ties are all
        named (two cameras that disagree: both). A moved camera's check is its registration onto
        the union of the cameras that agree (none: all its partners), which must confirm the move
        now (`CONFIRM_SCORE`; a registration that fails does not); another camera's is its best
        agreement. Cameras that
        could not be checked are left out and listed in the status."""
        clouds, self._unchecked = {}, {}
        arm_known = arm is not None and len(arm.points) > 0 and bool(np.all(np.isfinite(arm.points)))
        arm_tree = cKDTree(arm.points) if arm_known else None
        for name, view in views.items():
            cloud = workcell_cloud(view, self.config)
            if arm_tree is not None:
                cloud = cloud[~np.isfinite(arm_tree.query(cloud, distance_upper_bound=ARM_CLEARANCE)[0])]
            if len(cloud) < MIN_POINTS:
                self._unchecked[name] = f"{len(cloud)} depth points in the region (< {MIN_POINTS})"
            else:
                clouds[name] = WorkcellCloud.of(cloud, view.T_base_cam[:3, 3])
        pairs: dict[tuple[str, str], tuple[CameraCheck, CameraCheck]] = {}
        for pair in combinations(sorted(clouds), 2):
            first, second = self._register_onto(pair[0], [pair[1]], clouds, views)
            if first is None:
                self._history.pop(pair, None)
                continue
            pairs[pair] = (first, second)
            self._history.setdefault(pair, deque(maxlen=self.config.consecutive)).append((first, second))
        disagreeing = [pair for pair in pairs if len(self._history[pair]) == self.config.consecutive
                       and self._pair_disagrees(self._history[pair])]
        agreeing_pairs = set(pairs) - set(disagreeing)

        def agree(a: str, b: str) -> bool:
            return tuple(sorted((a, b))) in agreeing_pairs
        # Two cameras that both agree with a third cannot both be right and disagree with each
        # other: their registration is the one that failed (little shared structure), not a move.
        disagreeing = [(a, b) for a, b in disagreeing if not any(agree(a, c) and agree(b, c) for c in clouds)]
        moved = _smallest_covers(disagreeing)
        checks, unconfirmed = {}, set()
        for name in clouds:
            found = [c[pair.index(name)] for pair, c in pairs.items() if name in pair]
            if not found:
                self._unchecked[name] = "too little overlap with the other cameras' views"
                continue
            checks[name] = min(found, key=self._score)   # its best agreement
            if name in moved:
                partners = [other for other in clouds if other != name and tuple(sorted((name, other))) in pairs]
                refined, _ = self._register_onto(name, [p for p in partners if p not in moved] or partners,
                                                 clouds, views)
                checks[name] = refined or checks[name]
                if refined is None or self._score(refined) < CONFIRM_SCORE:
                    unconfirmed.add(name)
        moved -= unconfirmed
        self.last_arm = self.arm.check(views, arm if self.config.arm_check else None)
        arm_checked = {name: c for name, c in self.last_arm.items() if c.instants == self.config.consecutive}
        arm_moved = {name for name, c in arm_checked.items()
                     if c.translation > self.config.arm_warn_translation or c.rotation_deg > self.config.arm_warn_rotation_deg}
        if len(moved) > 1:
            moved = (moved - set(arm_checked)) | (moved & arm_moved) or moved
        moved |= arm_moved
        self._arm_moved = arm_moved
        self.since = {name: self.since.get(name, now) for name in moved}
        self.moved, self.last, self.last_check = moved, checks, now
        return checks

    def miscalibrated(self) -> dict[str, CameraCheck | ArmCheck]:
        """Cameras in WARN now, with the check that put them there (the arm check first)."""
        found = {name: self.last_arm[name] if name in self._arm_moved else self.last.get(name)
                 for name in sorted(self.moved)}
        return {name: check for name, check in found.items() if check is not None}

    def describe(self) -> str:
        """One line per camera in WARN, for logs and the hold reason."""
        return "; ".join(f"camera {name!r} appears moved by {100 * c.translation:.1f} cm / {c.rotation_deg:.1f} deg "
                         f"against {'the arm' if isinstance(c, ArmCheck) else 'the other cameras'} since its calibration"
                         for name, c in self.miscalibrated().items())

    def status(self) -> Status:
        """The diagnostics status `calibration_health`."""
        if self.last_check is None:
            return Status("calibration_health", Level.STALE, "no check yet")
        values = {f"{name}.offset": f"{100 * c.translation:.2f} cm, {c.rotation_deg:.2f} deg, overlap {c.overlap:.0%}"
                  for name, c in self.last.items()}
        values.update({f"{name}.unchecked": why for name, why in self._unchecked.items()})
        values.update({f"{name}.arm_offset": f"{100 * c.translation:.2f} cm, {c.rotation_deg:.2f} deg, "
                                              f"{c.points} arm points over {c.instants} checks"
                       for name, c in self.last_arm.items()})
        values.update({f"{name}.arm_unchecked": why for name, why in self.arm.unchecked.items()})
        values.update({f"{name}.warn_since": f"{since:.3f}" for name, since in self.since.items()})
        if self.miscalibrated():
            return Status("calibration_health", Level.WARN,
                          self.describe() + ": recalibrate (vla3d calibrate handeye) or restore the mount", values)
        if not self.last and not self.last_arm:
            return Status("calibration_health", Level.OK, "not checked: fewer than two cameras with depth in the "
                          "region and no camera that sees the arm", values)
        return Status("calibration_health", Level.OK, "cameras agree", values)
