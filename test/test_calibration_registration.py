"""The cross-view check's geometry on synthetic scenes whose truth is known exactly: what two
cameras count as seen by both, what a registration may report where the geometry does not
constrain it, and how a pair's verdict is read."""
from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from scipy.spatial import cKDTree

from vla3d_ros.calibration.health import (
    UNMEASURED_INFORMATION,
    CalibrationHealthMonitor,
    DepthView,
    WorkcellCloud,
    workcell_cloud,
)
from vla3d_ros.calibration.registration import CameraCheck, point_to_plane_icp
from vla3d_ros.evaluate.calibration_health import Frame, evaluate_monitor
from vla3d_ros.runtime.config import CalibrationMonitorConfig
from vla3d_ros.runtime.diagnostics import Level
from vla3d_ros.types import Observation

K = np.array([[300.0, 0.0, 128.0], [0.0, 300.0, 128.0], [0.0, 0.0, 1.0]])
PLATE_HALF_THICKNESS = 0.01   # m: a plate 2 cm thick, standing across the x axis


def camera_on_x(x: float) -> np.ndarray:
    """T_base_cam of a camera at (x, 0, 0.2) looking along -sign(x) (optical z), image y down."""
    look = -np.sign(x)
    T = np.eye(4)
    T[:3, :3] = np.column_stack([[0.0, look, 0.0], [0.0, 0.0, -1.0], [look, 0.0, 0.0]])
    T[:3, 3] = (x, 0.0, 0.2)
    return T


def plate_view(x: float) -> DepthView:
    """The depth a camera at (x, 0, 0.2) sees of the plate's face towards it: a plane square to its
    optical axis, 0.4 m x 0.4 m (y in [-0.2, 0.2], z in [0, 0.4]); nothing elsewhere."""
    T = camera_on_x(x)
    distance = abs(x) - PLATE_HALF_THICKNESS
    v, u = np.mgrid[0:256, 0:256].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    points = T[:3, 3] + distance * rays @ T[:3, :3].T
    on_plate = (np.abs(points[..., 1]) <= 0.2) & (points[..., 2] >= 0.0) & (points[..., 2] <= 0.4)
    return DepthView(np.where(on_plate, distance, np.nan).astype(np.float32), K, T)


def test_a_surface_facing_away_from_a_camera_is_not_seen_by_it():
    """Two cameras on either side of a plate 2 cm thick see its two faces; each face projects into
    the other camera onto a depth 2 cm away (within the visibility tolerance), but faces away
    from it: nothing is seen by both."""
    config = CalibrationMonitorConfig(enabled=True)
    front, back = plate_view(1.0), plate_view(-1.0)
    cloud = WorkcellCloud.of(workcell_cloud(front, config), front.T_base_cam[:3, 3])
    assert len(cloud.points) > 500
    np.testing.assert_allclose(cloud.normals, np.tile([1.0, 0.0, 0.0], (len(cloud.points), 1)), atol=1e-6)
    assert cloud.seen_by(front).mean() > 0.95
    assert not cloud.seen_by(back).any()


def test_two_cameras_that_see_opposite_faces_are_unchecked_not_warned():
    """The same plate through the monitor: on the true calibration, registering one face onto the
    other would read a 2 cm offset and name both cameras; they share no surface, so both are
    reported unchecked."""
    monitor = CalibrationHealthMonitor(CalibrationMonitorConfig(enabled=True, consecutive=1))
    checks = monitor.check(0.0, {"front": plate_view(1.0), "back": plate_view(-1.0)})
    assert checks == {}
    status = monitor.status()
    assert status.level == Level.OK, status.message
    assert {"front.unchecked", "back.unchecked"} <= set(status.values)


def noisy_plane(rng: np.random.Generator, count: int, tilt_noise_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Points on the plane z = 0 (0.4 m square) and unit normals tilted by ~`tilt_noise_deg`."""
    points = np.column_stack([rng.uniform(-0.2, 0.2, (count, 2)), np.zeros(count)])
    normals = np.column_stack([np.radians(tilt_noise_deg) * rng.standard_normal((count, 2)), np.ones(count)])
    return points, normals / np.linalg.norm(normals, axis=1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 4, 5, 7])
def test_a_plane_measures_only_what_it_constrains(seed):
    """A source plane 1 cm above a target plane, slid 3 cm along it: the plane fixes the height and
    not the slide. With noisy normals (tilted by ~2 deg) the directions along the plane carry a
    little information, and the damped steps alone slide by 1.6-2 mm on these seeds; below
    `UNMEASURED_INFORMATION` they are not stepped along at all: the height is found, the slide is
    not invented."""
    rng = np.random.default_rng(seed)
    target, normals = noisy_plane(rng, 3000, 2.0)
    source = noisy_plane(rng, 2000, 0.0)[0] + [0.03, 0.0, 0.01]
    result = point_to_plane_icp([source], [(cKDTree(target), normals)], min_information=UNMEASURED_INFORMATION)
    assert abs(result.correction[2, 3] + 0.01) < 0.001, result.correction
    assert np.linalg.norm(result.correction[:2, 3]) < 0.0005, result.correction


def check(translation: float, rotation_deg: float) -> CameraCheck:
    return CameraCheck(np.eye(4), translation, rotation_deg, 1.0)


def test_a_pair_disagrees_only_where_both_cameras_would_have_moved_beyond_the_thresholds():
    """A turn about points near the wrist camera reads as a slide at a fixed camera a metre away
    (the lever arm) and barely at the wrist: moving the wrist by little explains it. A slide or a
    turn beyond the thresholds reads beyond at both."""
    config = CalibrationMonitorConfig(enabled=True, consecutive=3)
    monitor = CalibrationHealthMonitor(config)
    beyond, within = 2 * config.warn_translation, config.warn_translation / 2
    lever_arm = deque([(check(beyond, 0.5), check(within, 0.5))] * 3)
    assert not monitor._pair_disagrees(lever_arm)
    slide = deque([(check(beyond, 0.1), check(beyond, 0.1))] * 3)
    assert monitor._pair_disagrees(slide)
    turn = deque([(check(within, 2 * config.warn_rotation_deg), check(within, 2 * config.warn_rotation_deg))] * 3)
    assert monitor._pair_disagrees(turn)


def look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """T_base_cam of a camera at `centre` whose optical axis points at `target` (image y down)."""
    z = (target - centre) / np.linalg.norm(target - centre)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.column_stack([x, np.cross(z, x), z])
    T[:3, 3] = centre
    return T


def face_depth(T: np.ndarray) -> np.ndarray:
    """(256, 256) depth of the plate's +x face (x = PLATE_HALF_THICKNESS) seen from T_base_cam T."""
    v, u = np.mgrid[0:256, 0:256].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1) @ T[:3, :3].T
    depth = (PLATE_HALF_THICKNESS - T[0, 3]) / rays[..., 0]   # camera z of the hit (rays have camera z = 1)
    points = T[:3, 3] + depth[..., None] * rays
    on_plate = (depth > 0) & (np.abs(points[..., 1]) <= 0.2) & (points[..., 2] >= 0.0) & (points[..., 2] <= 0.4)
    return np.where(on_plate, depth, np.nan)


def test_monitor_eval_all_windows_tries_every_window_and_counts_the_misses():
    """Two cameras see the same face of the plate from either side of its normal: the face fixes
    a slide along its normal (x), not along it (y, z). Over every window of 12 static frames, the
    x slides are named in each of the 3 windows and the others in none, and the misses say so."""
    poses = np.stack([look_at(np.array([1.0, y, 0.3]), np.array([0.0, 0.0, 0.2])) for y in (-0.3, 0.3)])
    observation = Observation(camera_names=("left", "right"), rgb=np.zeros((2, 256, 256, 3), np.uint8),
                              depth=np.stack([face_depth(T) for T in poses]).astype(np.float32),
                              intrinsics=np.stack([K, K]), T_base_cam=poses, joint_positions=np.zeros(7, np.float32),
                              ee_pose=np.zeros(7, np.float32), gripper=1.0, instruction="")
    config = CalibrationMonitorConfig(enabled=True)
    result = evaluate_monitor([Frame(observation, {})] * 12, config, None, translations_cm=(2.0,),
                              rotations_deg=(), all_windows=True)
    assert result.windows == 3 and result.checks == 12 and result.false_alarms == 0
    assert result.detected[("translation", 2.0)] == [True] * 3 + [False] * 6 + [True] * 3 + [False] * 6
    assert result.missed == [f"{camera} 2 cm {axis} (3/3 windows)" for camera in ("left", "right") for axis in "yz"]
    assert "detected (cameras x axes x 3 windows)" in result.table()
