"""Arm check: does each camera's depth of the robot arm lie where the joint states put the arm?

The cross-view check (`health`) compares cameras with each other, so it sees only what the
cameras share: mostly the table top, which says nothing about a slide along the table or a turn
about its normal. The arm is 3D structure whose base-frame pose is known without any camera: its
link poses come from the joint states (forward kinematics, or TF on a robot) and its surface from
the robot model (MuJoCo geoms in the simulator, URDF collision primitives on a robot). And it
moves between checks, so successive checks see it in different poses, which together constrain
all six degrees of freedom. Each check, per camera, on its own (no partner camera needed, so a
move is pinned on one camera unambiguously):

1. the arm's surface samples (`SurfaceSamples`, base frame, at the image's instant) are put into
   the camera frame of the current calibration; the samples the camera should see are those that
   face it, project inside the image and meet the depth there within `VISIBILITY_TOLERANCE`
   (not hidden by another link, an object or the image border);
2. the camera's depth pixels within `MASK_MARGIN` (at the arm's depth) of those samples' pixels
   are its view of the arm (the predicted silhouette, dilated: a stale calibration shifts the arm
   in the image), less the points nearest to the mount link (`SurfaceSamples.mount`), which is
   seen where it meets the table;
3. these points, from the last `consecutive` checks, are registered together onto the visible
   samples (`registration.point_to_plane_icp`, damped as the cross-view check is, coarse then fine
   correspondence distances, rotation about the camera centre so that the damping favours the
   smallest move of the camera; where the steps end on a worse fit than the start, the start,
   `registration.fit_at`) for one correction C in the camera frame: C maps the camera's
   points onto the arm, so T_base_cam C is the pose that agrees with the joint states. In the
   camera frame C is the same at every instant for a fixed camera (T C T^-1 in the base frame)
   and for the wrist camera too, whose error is in its hand-eye transform: the fingers in its
   depth are not where FK x hand-eye puts them.

A camera that sees fewer than `arm_min_points` arm surface samples over the window, or whose depth
matches the arm at fewer points, is unchecked (it sees too little of the arm, or the arm is
hidden), never WARN.
"""
from __future__ import annotations

from xml.etree import ElementTree
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation
from scipy.spatial import cKDTree

from vla3d_ros.calibration.registration import (
    VISIBILITY_TOLERANCE,
    DepthView,
    fit_at,
    offset_check,
    point_to_plane_icp,
)
from vla3d_ros.geometry import euler_xyz_to_matrix, invert_transform
from vla3d_ros.runtime.calibration import TransformSource
from vla3d_ros.runtime.config import CalibrationMonitorConfig

MASK_MARGIN = 0.03   # m: how far a stale calibration may have shifted the arm in the image (3 cm)
# Smallest eigenvalue of the window's point-to-plane information (registration.Registration.weakest)
# below which a direction counts as unconstrained: a camera seeing one flat face of the arm. The
# wrist camera seeing only the closed finger pads (the hand down at the table) gives < 5e-5 and its
# correction drifted by 13-42 deg on the true calibration; with the fingers open it sees their
# edges too (5e-4 to 1e-2 per instant), the front camera 2e-4 to 5e-3 per instant.
MIN_INFORMATION = 1e-4


@dataclass(frozen=True)
class SurfaceSamples:
    """Points (N, 3) on a surface and their outward unit normals (N, 3), in one frame. `mount`
    (N,) bool marks samples of the link that stands on the table (the root link): they claim the
    depth points nearest to them but are not registered onto (where link and table meet, depth
    cannot tell one from the other); None = no such samples."""

    points: np.ndarray
    normals: np.ndarray
    mount: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("points", "normals"):
            value = np.asarray(getattr(self, name))
            if value.ndim != 2 or value.shape[1] != 3:
                raise ValueError(f"surface {name} must be (N, 3), got shape {value.shape}")
        if len(self.points) != len(self.normals):
            raise ValueError(f"surface points and normals differ in length: {len(self.points)} vs {len(self.normals)}")
        if self.mount is not None and np.shape(self.mount) != (len(self.points),):
            raise ValueError(f"surface mount flags must be ({len(self.points)},), got shape {np.shape(self.mount)}")

    @property
    def mount_flags(self) -> np.ndarray:
        return np.zeros(len(self.points), bool) if self.mount is None else np.asarray(self.mount, bool)

    def transformed(self, T: np.ndarray) -> SurfaceSamples:
        """The samples moved by the (4, 4) rigid transform T."""
        R = T[:3, :3]
        return SurfaceSamples(self.points @ R.T + T[:3, 3], self.normals @ R.T, self.mount)

    @staticmethod
    def concatenate(parts: Sequence[SurfaceSamples]) -> SurfaceSamples:
        if not parts:
            return SurfaceSamples(np.zeros((0, 3)), np.zeros((0, 3)))
        mount = None if all(p.mount is None for p in parts) else np.concatenate([p.mount_flags for p in parts])
        return SurfaceSamples(np.concatenate([p.points for p in parts]), np.concatenate([p.normals for p in parts]),
                              mount)


def _sphere_directions(count: int) -> np.ndarray:
    """(count, 3) near-uniform unit vectors (Fibonacci lattice)."""
    k = np.arange(count) + 0.5
    z = 1.0 - 2.0 * k / count
    phi = np.pi * (1.0 + 5 ** 0.5) * k
    r = np.sqrt(1.0 - z ** 2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


def _disc(radius: float, spacing: float) -> np.ndarray:
    """(N, 2) points covering a disc of `radius` in rings `spacing` apart."""
    rings = [np.zeros((1, 2))]
    for rho in np.arange(spacing, radius + 1e-9, spacing):
        angles = np.linspace(0, 2 * np.pi, max(6, int(np.ceil(2 * np.pi * rho / spacing))), endpoint=False)
        rings.append(rho * np.stack([np.cos(angles), np.sin(angles)], axis=-1))
    return np.concatenate(rings)


def primitive_surface(kind: str, size: Sequence[float], spacing: float) -> SurfaceSamples:
    """Samples about `spacing` metres apart on a primitive centred at its frame's origin:
    "box" (half extents x, y, z), "sphere" (radius), "cylinder" and "capsule" (radius, half length,
    axis z; MuJoCo's convention, a URDF cylinder's length is twice the half length)."""
    if spacing <= 0:
        raise ValueError(f"surface spacing must be > 0, got {spacing}")
    size = [float(s) for s in size]
    # a part thinner than the spacing (a finger) still gets a few samples across
    spacing = min(spacing, min(size[:3 if kind == "box" else 1]) / 2)
    if kind == "box":
        parts = []
        for axis in range(3):
            u, v = [a for a in range(3) if a != axis]
            gu, gv = (np.linspace(-size[a], size[a], max(2, int(np.ceil(2 * size[a] / spacing)) + 1)) for a in (u, v))
            grid = np.stack(np.meshgrid(gu, gv, indexing="ij"), axis=-1).reshape(-1, 2)
            for sign in (-1.0, 1.0):
                points = np.zeros((len(grid), 3))
                points[:, u], points[:, v], points[:, axis] = grid[:, 0], grid[:, 1], sign * size[axis]
                normals = np.zeros_like(points)
                normals[:, axis] = sign
                parts.append(SurfaceSamples(points, normals))
        return SurfaceSamples.concatenate(parts)
    if kind == "sphere":
        directions = _sphere_directions(max(8, int(np.ceil(4 * np.pi * size[0] ** 2 / spacing ** 2))))
        return SurfaceSamples(size[0] * directions, directions)
    if kind in ("cylinder", "capsule"):
        radius, half = size[0], size[1]
        angles = np.linspace(0, 2 * np.pi, max(6, int(np.ceil(2 * np.pi * radius / spacing))), endpoint=False)
        heights = np.linspace(-half, half, max(2, int(np.ceil(2 * half / spacing)) + 1))
        a, h = (grid.ravel() for grid in np.meshgrid(angles, heights, indexing="ij"))
        side_normals = np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], axis=-1)
        parts = [SurfaceSamples(np.column_stack([radius * side_normals[:, :2], h]), side_normals)]
        if kind == "cylinder":
            disc = _disc(radius, spacing)
            for sign in (-1.0, 1.0):
                parts.append(SurfaceSamples(np.column_stack([disc, np.full(len(disc), sign * half)]),
                                            np.tile([0.0, 0.0, sign], (len(disc), 1))))
        else:
            directions = _sphere_directions(max(8, int(np.ceil(4 * np.pi * radius ** 2 / spacing ** 2))))
            for sign in (-1.0, 1.0):
                cap = directions[sign * directions[:, 2] > 0]
                parts.append(SurfaceSamples(radius * cap + [0.0, 0.0, sign * half], cap))
        return SurfaceSamples.concatenate(parts)
    raise ValueError(f"unknown primitive {kind!r}; expected box, sphere, cylinder or capsule")


class ArmSurface:
    """The arm's surface as samples fixed to its links (link name -> `SurfaceSamples` in the link
    frame); `posed` places them with the link poses of one instant. `mount_link` is the link that
    stands on the table (its samples are flagged `mount`)."""

    def __init__(self, links: Mapping[str, SurfaceSamples], mount_link: str | None = None) -> None:
        self.links = {name: SurfaceSamples(samples.points, samples.normals,
                                           np.full(len(samples.points), name == mount_link))
                      for name, samples in links.items() if len(samples.points)}
        if not self.links:
            raise ValueError("the arm surface has no samples (no link with collision geometry)")

    def posed(self, link_poses: Mapping[str, np.ndarray]) -> SurfaceSamples:
        """Base-frame samples for link poses (name -> (4, 4) T_base_link) of one instant. A missing
        link is an error (a partly posed arm would be compared as if complete)."""
        missing = sorted(set(self.links) - set(link_poses))
        if missing:
            raise ValueError(f"no pose for arm links {missing}")
        return SurfaceSamples.concatenate([samples.transformed(np.asarray(link_poses[name], np.float64))
                                           for name, samples in self.links.items()])

    @classmethod
    def from_urdf(cls, urdf: str, spacing: float) -> tuple[ArmSurface, list[str]]:
        """The surface of a URDF's collision primitives (box, cylinder, sphere; text of the URDF),
        and the links whose mesh collisions were left out (no STL loader is pinned here)."""
        try:
            root = ElementTree.fromstring(urdf)
        except ElementTree.ParseError as error:
            raise ValueError(f"robot description is not valid URDF XML: {error}") from None
        links, meshes = {}, []
        for link in root.iter("link"):
            parts = []
            for collision in link.iter("collision"):
                geometry = collision.find("geometry")
                shape = None if geometry is None or len(geometry) == 0 else geometry[0]
                if shape is None:
                    continue
                if shape.tag == "box":
                    samples = primitive_surface("box", [s / 2 for s in _floats(shape, "size", 3)], spacing)
                elif shape.tag == "cylinder":
                    radius, length = _floats(shape, "radius", 1)[0], _floats(shape, "length", 1)[0]
                    samples = primitive_surface("cylinder", (radius, length / 2), spacing)
                elif shape.tag == "sphere":
                    samples = primitive_surface("sphere", _floats(shape, "radius", 1), spacing)
                else:
                    meshes.append(link.get("name", "?"))
                    continue
                origin = collision.find("origin")
                T = np.eye(4)
                if origin is not None:
                    T[:3, 3] = _floats(origin, "xyz", 3, "0 0 0")
                    T[:3, :3] = euler_xyz_to_matrix(*_floats(origin, "rpy", 3, "0 0 0"))
                parts.append(samples.transformed(T))
            if parts:
                links[link.get("name")] = SurfaceSamples.concatenate(parts)
        children = {joint.find("child").get("link") for joint in root.iter("joint") if joint.find("child") is not None}
        roots = [link.get("name") for link in root.iter("link") if link.get("name") not in children]
        return cls(links, roots[0] if len(roots) == 1 else None), sorted(set(meshes))


def link_poses(transforms: TransformSource, base_frame: str, links: Iterable[str], stamp: float | None
               ) -> dict[str, np.ndarray]:
    """Link name -> (4, 4) T_base_link at `stamp` from a transform source (TF on a robot);
    LookupError when one is unknown (then the arm is not checked at this instant)."""
    return {link: transforms.lookup_transform(base_frame, link, stamp) for link in links}


def _floats(element: ElementTree.Element, attribute: str, count: int, default: str | None = None) -> list[float]:
    text = element.get(attribute, default)
    try:
        values = [float(v) for v in (text or "").split()]
    except ValueError:
        values = []
    if len(values) != count:
        raise ValueError(f"URDF <{element.tag} {attribute}=...> must hold {count} numbers, got {text!r}")
    return values


@dataclass(frozen=True)
class ArmCheck:
    """One camera registered onto the arm: the correction (4, 4) in the base frame (for the newest
    instant), the apparent move of the camera centre (m) and turn (deg), and how many arm surface
    samples the camera sees over the `instants` registered together."""

    correction: np.ndarray
    translation: float
    rotation_deg: float
    points: int
    instants: int


@dataclass(frozen=True)
class _ArmView:
    """One camera at one instant, in the camera frame of its current calibration: its depth points
    (N, 3) near the predicted arm and the arm samples it should see (tree of (M, 3), normals)."""

    depth_points: np.ndarray
    surface: cKDTree
    normals: np.ndarray


def _arm_view(view: DepthView, arm: SurfaceSamples, spacing: float) -> _ArmView | None:
    """See the module docstring, steps 1-2; None when the camera sees none of the arm."""
    samples = arm.transformed(invert_transform(view.T_base_cam))
    p, n = samples.points, samples.normals
    height, width = view.depth.shape
    K = view.K
    facing = (p[:, 2] > 1e-3) & (np.einsum("ij,ij->i", p, n) < 0)
    z = np.where(facing, p[:, 2], 1.0)
    u = np.rint(K[0, 0] * p[:, 0] / z + K[0, 2]).astype(np.int64)
    v = np.rint(K[1, 1] * p[:, 1] / z + K[1, 2]).astype(np.int64)
    inside = facing & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    seen = np.full(len(p), np.nan)
    seen[inside] = view.depth[v[inside], u[inside]]
    with np.errstate(invalid="ignore"):
        visible = inside & (np.abs(seen - p[:, 2]) < VISIBILITY_TOLERANCE)
    if not visible.any():
        return None
    mask = np.zeros((height, width), bool)
    mask[v[visible], u[visible]] = True
    # samples `spacing` apart leave gaps in the silhouette; a stale calibration shifts it
    margin = int(np.ceil(K[0, 0] * (MASK_MARGIN + spacing) / np.median(p[visible, 2])))
    mask = binary_dilation(mask, np.ones((3, 3), bool), iterations=max(1, margin))
    depth = view.depth.astype(np.float64)
    mask &= np.isfinite(depth) & (depth > 0)
    rows, cols = np.nonzero(mask)
    d = depth[rows, cols]
    depth_points = np.stack([(cols - K[0, 2]) * d / K[0, 0], (rows - K[1, 2]) * d / K[1, 1], d], axis=-1)
    mount = samples.mount_flags[visible]
    if mount.any():   # points nearest to the mount link are its (or the table's where they meet)
        _, nearest = cKDTree(p[visible]).query(depth_points)
        depth_points = depth_points[~mount[nearest]]
    registered = visible.copy()
    registered[visible] = ~mount
    if not registered.any():
        return None
    return _ArmView(depth_points, cKDTree(p[registered]), n[registered])


def _subsample(points: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    return points if len(points) <= count else points[rng.choice(len(points), count, replace=False)]


class ArmSurfaceCheck:
    """Registers each camera's depth onto the arm surface (module docstring), over the last
    `config.consecutive` instants; `check` returns the checks and `unchecked` says why the others
    were not checked."""

    MAX_POINTS_PER_VIEW = 3000   # depth points of one camera at one instant (beyond: sampled)

    def __init__(self, config: CalibrationMonitorConfig) -> None:
        self.config = config
        self.unchecked: dict[str, str] = {}
        self._history: dict[str, deque[_ArmView]] = {}
        self._rng = np.random.default_rng(0)

    def check(self, views: Mapping[str, DepthView], arm: SurfaceSamples | None) -> dict[str, ArmCheck]:
        """One check of every camera against the arm surface `arm` (base frame, the images'
        instant). None (link poses unknown): no check and nothing to report; empty or non-finite:
        every camera unchecked, with the reason."""
        self.unchecked = {}
        if arm is None:
            self._history.clear()
            return {}
        if len(arm.points) == 0:
            self._history.clear()
            self.unchecked = {name: "no arm surface (joint states / link poses missing)" for name in views}
            return {}
        if not (np.all(np.isfinite(arm.points)) and np.all(np.isfinite(arm.normals))):
            self._history.clear()
            self.unchecked = {name: "arm surface has non-finite points (a link pose is NaN)" for name in views}
            return {}
        checks = {}
        for name, view in views.items():
            history = self._history.setdefault(name, deque(maxlen=self.config.consecutive))
            seen = _arm_view(view, arm, self.config.arm_spacing)
            if seen is None:
                history.clear()   # the window must be consecutive instants the arm was seen in
                self.unchecked[name] = "sees none of the arm"
                continue
            history.append(seen)
            sources = [_subsample(h.depth_points, self.MAX_POINTS_PER_VIEW, self._rng) for h in history]
            targets = [(h.surface, h.normals) for h in history]
            C, share, weakest = point_to_plane_icp(sources, targets, min_points=self.config.arm_min_points,
                                                   pivot=np.zeros(3))
            start_residual, start_share = fit_at(sources, targets, np.eye(4))
            if fit_at(sources, targets, C)[0] > start_residual:
                # The steps, led by matches at the coarse distance, ended where the depth lies
                # farther from the arm than on the current calibration (the wrist camera on its
                # true calibration, hovering: median residual 0.01 mm at the start, 0.7 mm at
                # the end, reported as a 9 deg turn): the current calibration is the answer.
                C, share = np.eye(4), start_share
            seen_samples = sum(h.surface.n for h in history)
            matched = int(round(share * sum(len(s) for s in sources)))
            if min(seen_samples, matched) < self.config.arm_min_points:
                self.unchecked[name] = (f"sees {seen_samples} arm surface samples, {matched} depth points on them "
                                        f"(< arm_min_points {self.config.arm_min_points})")
                continue
            if weakest < MIN_INFORMATION:
                self.unchecked[name] = (f"its view of the arm leaves its pose unconstrained in one direction "
                                        f"(information {weakest:.1e} < {MIN_INFORMATION:g}: a flat face)")
                continue
            correction = view.T_base_cam @ C @ invert_transform(view.T_base_cam)
            camera_check = offset_check(correction, view.T_base_cam[:3, 3], share)
            checks[name] = ArmCheck(correction, camera_check.translation, camera_check.rotation_deg, seen_samples,
                                   len(history))
        return checks
