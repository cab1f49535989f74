"""The arm check of the calibration health monitor: each camera's depth registered onto the arm's
surface placed by the joint states. Simulated RGB-D frames with depth noise while the arm moves."""
from __future__ import annotations

import numpy as np
import pytest

from vla3d_ros.calibration.arm_check import (
    ArmSurface,
    ArmSurfaceCheck,
    SurfaceSamples,
    link_poses,
    primitive_surface,
)
from vla3d_ros.calibration.health import CalibrationHealthMonitor, DepthView
from vla3d_ros.evaluate.calibration_health import depth_views
from vla3d_ros.geometry import displace_camera, euler_xyz_to_matrix
from vla3d_ros.runtime.config import CalibrationMonitorConfig, ConfigError, RuntimeConfig
from vla3d_ros.runtime.diagnostics import Level
from vla3d_ros.sim.env import TabletopEnv
from vla3d_ros.sim.perturbations import parse_perturbation

IMAGE_SIZE = (256, 256)
CONFIG = CalibrationMonitorConfig(enabled=True)


@pytest.fixture(scope="module")
def frames():
    """(observation, arm surface samples in the base frame) at 5 instants while the arm moves
    (3 cameras, depth noise of sensor_noise:2)."""
    env = TabletopEnv("push_to_zone", image_size=IMAGE_SIZE, perturbations=[parse_perturbation("sensor_noise:2")])
    surface = env.arm_surface(CONFIG.arm_spacing)
    rng = np.random.default_rng(0)
    out = []
    try:
        env.reset(seed=1)
        for _ in range(5):
            observation = env.step(np.concatenate([rng.uniform(-0.02, 0.02, 3), rng.uniform(-0.1, 0.1, 3), [1.0]]))
            out.append((observation, surface.posed(env.arm_link_poses())))
    finally:
        env.close()
    return out



def test_primitive_samples_lie_on_their_surface_with_unit_outward_normals():
    box = primitive_surface("box", (0.05, 0.02, 0.1), 0.01)
    assert np.allclose(np.abs(np.einsum("ij,ij->i", box.points, box.normals)),
                       np.abs(box.normals) @ [0.05, 0.02, 0.1])
    cylinder = primitive_surface("cylinder", (0.04, 0.1), 0.01)
    side = cylinder.normals[:, 2] == 0
    assert np.allclose(np.hypot(*cylinder.points[side, :2].T), 0.04)
    assert np.allclose(np.abs(cylinder.points[~side, 2]), 0.1)
    capsule = primitive_surface("capsule", (0.03, 0.05), 0.01)
    axis = np.clip(capsule.points[:, 2], -0.05, 0.05)
    assert np.allclose(np.linalg.norm(capsule.points - np.outer(axis, [0, 0, 1]), axis=1), 0.03)
    for samples in (box, cylinder, capsule, primitive_surface("sphere", (0.02,), 0.01)):
        assert np.allclose(np.linalg.norm(samples.normals, axis=1), 1.0)
        assert np.all(np.einsum("ij,ij->i", samples.points, samples.normals) > 0)   # outward
    thin = primitive_surface("box", (0.01, 0.006, 0.026), 0.01)   # a finger: still sampled across
    assert len(np.unique(thin.points[thin.normals[:, 2] == 1][:, 1].round(4))) >= 3
    with pytest.raises(ValueError, match="unknown primitive 'cone'"):
        primitive_surface("cone", (0.1,), 0.01)


def test_the_true_calibration_gives_no_warn_over_frames_with_depth_noise(frames):
    monitor = CalibrationHealthMonitor(CONFIG)
    for t, (observation, arm) in enumerate(frames):
        monitor.check(float(t), depth_views(observation), arm)
        assert monitor.status().level == Level.OK, monitor.status().message
    # the front camera sees the arm's lower links: checked over a full window, well within the thresholds
    front = monitor.last_arm["front"]
    assert front.instants == CONFIG.consecutive and front.points >= CONFIG.arm_min_points
    assert front.translation < CONFIG.warn_translation and front.rotation_deg < CONFIG.warn_rotation_deg


@pytest.mark.parametrize("move", [
    dict(rotation_deg=(0.0, 0.0, 2.0)),     # a turn about the vertical
    dict(translation=(0.0, 0.02, 0.0)),     # a slide along the table
])
def test_an_offset_along_the_table_is_found_by_the_arm_check_and_named(frames, move):
    """The cross-view check cannot see a turn about the table's normal; the arm check names the camera."""
    translation = -np.asarray(move.get("translation", (0.0, 0.0, 0.0)))
    rotation = euler_xyz_to_matrix(*-np.radians(move.get("rotation_deg", (0.0, 0.0, 0.0))))
    with_arm, without_arm = CalibrationHealthMonitor(CONFIG), CalibrationHealthMonitor(CONFIG)
    for t, (observation, arm) in enumerate(frames[:CONFIG.consecutive]):
        stale = {"front": displace_camera(observation.T_base_cam[0], translation, rotation)}
        with_arm.check(float(t), depth_views(observation, stale), arm)
        if "rotation_deg" in move:
            without_arm.check(float(t), depth_views(observation, stale))
    if "rotation_deg" in move:
        assert without_arm.status().level == Level.OK, without_arm.status().message   # the miss being closed
    status = with_arm.status()
    assert status.level == Level.WARN and "camera 'front' appears moved" in status.message, status.message
    assert "against the arm" in status.message
    assert list(with_arm.miscalibrated()) == ["front"]
    check = with_arm.miscalibrated()["front"]
    # the offset's size: a turn of 1-4 deg, a slide of 1-5 cm
    if "rotation_deg" in move:
        assert 1.0 < check.rotation_deg < 4.0, check
    else:
        assert 0.01 < check.translation < 0.05 and check.rotation_deg < 2.0, check
    # (Which way it moved is not asserted: the arm seen from the front camera is small, off the
    # optical axis, and moves little over three checks, so a slide, a turn about the vertical and a
    # roll about the optical axis that put it at the same place look alike.)


def test_a_registration_that_ends_on_a_worse_fit_than_the_calibration_reports_no_offset(frames, monkeypatch):
    """Matches at the coarse distance can lead the steps to a pose that fits the arm worse than the
    current calibration (seen on the wrist camera: a 9 deg turn on the true calibration). Whatever
    pose the steps end on, one that puts the depth farther from the arm than the calibration does
    is not reported: here the registration is made to end 9 deg off on the true calibration."""
    from vla3d_ros.calibration import arm_check
    from vla3d_ros.calibration.registration import Registration

    astray = np.eye(4)
    astray[:3, :3] = euler_xyz_to_matrix(0.0, np.radians(9.0), 0.0)
    icp = arm_check.point_to_plane_icp
    monkeypatch.setattr(arm_check, "point_to_plane_icp",
                        lambda *args, **kwargs: Registration(astray, *icp(*args, **kwargs)[1:]))
    check = ArmSurfaceCheck(CONFIG)
    for observation, arm in frames[:CONFIG.consecutive]:
        checks = check.check(depth_views(observation), arm)
    assert "front" in checks, check.unchecked
    assert checks["front"].rotation_deg < 1e-9 and checks["front"].translation < 1e-9, checks["front"]


def test_a_camera_that_does_not_see_the_arm_is_unchecked_not_warned(frames):
    """The side camera sees (almost) none of the arm in these poses; made stale by a slide it cannot
    be checked against the arm, and no WARN comes from the arm check."""
    checker = ArmSurfaceCheck(CONFIG)
    for observation, arm in frames[:CONFIG.consecutive]:
        stale = {"side": displace_camera(observation.T_base_cam[1], (0.02, 0.0, 0.0))}
        checks = checker.check(depth_views(observation, stale), arm)
    assert "side" not in checks and "side" in checker.unchecked
    blind = depth_views(frames[0][0])
    blind["front"] = DepthView(np.full(IMAGE_SIZE, np.nan), blind["front"].K, blind["front"].T_base_cam)
    assert "front" not in ArmSurfaceCheck(CONFIG).check(blind, frames[0][1])


def test_bad_arm_inputs_leave_cameras_unchecked_or_fail_in_one_line(frames):
    observation, arm = frames[0]
    checker = ArmSurfaceCheck(CONFIG)
    assert checker.check(depth_views(observation), SurfaceSamples(np.zeros((0, 3)), np.zeros((0, 3)))) == {}
    assert set(checker.unchecked) == {"front", "side", "wrist"} and "no arm surface" in checker.unchecked["front"]
    points = arm.points.copy()
    points[0] = np.nan
    assert checker.check(depth_views(observation), SurfaceSamples(points, arm.normals, arm.mount)) == {}
    assert "non-finite" in checker.unchecked["front"]
    monitor = CalibrationHealthMonitor(CONFIG)
    monitor.check(0.0, depth_views(observation), SurfaceSamples(points, arm.normals))
    assert monitor.status().level == Level.OK and "front.arm_unchecked" in monitor.status().values
    with pytest.raises(ValueError, match=r"surface points must be \(N, 3\), got shape \(4, 2\)"):
        SurfaceSamples(np.zeros((4, 2)), np.zeros((4, 3)))
    surface = ArmSurface({"a": primitive_surface("sphere", (0.05,), 0.01), "b": primitive_surface("sphere", (0.05,), 0.01)})
    with pytest.raises(ValueError, match=r"no pose for arm links \['b'\]"):
        surface.posed({"a": np.eye(4)})


def test_a_camera_that_sees_only_a_flat_face_of_the_arm_is_unchecked():
    """A flat face constrains three of a pose's six directions (the wrist camera seeing only the
    finger pads): the check says so instead of reporting the drift of the other three; the same
    camera seeing a box's corner (three faces) is checked."""
    K = np.array([[200.0, 0.0, 64.0], [0.0, 200.0, 64.0], [0.0, 0.0, 1.0]])
    config = CalibrationMonitorConfig(enabled=True, consecutive=1)

    def view_of(box_size, rotation_deg):
        # a box rotated about its centre, 0.5 m in front of the camera; the depth is ray-cast
        R = euler_xyz_to_matrix(*np.radians(rotation_deg))
        centre, half = np.array([0.0, 0.0, 0.5]), np.asarray(box_size) / 2
        v, u = np.mgrid[0:128, 0:128]
        rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones((128, 128))], axis=-1) @ R
        origin = -centre @ R
        with np.errstate(divide="ignore", invalid="ignore"):
            near = np.max(np.minimum((-half - origin) / rays, (half - origin) / rays), axis=-1)
            far = np.min(np.maximum((-half - origin) / rays, (half - origin) / rays), axis=-1)
        depth = np.where((near <= far) & (near > 0), near, np.nan)
        surface = primitive_surface("box", half, 0.005)
        samples = SurfaceSamples(surface.points @ R.T + centre, surface.normals @ R.T)
        return {"cam": DepthView(depth, K, np.eye(4))}, samples

    checker = ArmSurfaceCheck(config)
    assert checker.check(*view_of((0.2, 0.2, 0.02), (0.0, 0.0, 0.0))) == {}
    assert "unconstrained in one direction" in checker.unchecked["cam"]
    corner = ArmSurfaceCheck(config).check(*view_of((0.15, 0.15, 0.15), (35.0, 40.0, 0.0)))
    assert corner["cam"].translation < 0.005 and corner["cam"].rotation_deg < 0.5, corner


URDF = """<robot name="r">
  <link name="base"><collision><geometry><cylinder radius="0.1" length="0.2"/></geometry></collision></link>
  <link name="upper"><collision><origin xyz="0 0 0.3" rpy="0 1.5707963 0"/>
    <geometry><box size="0.1 0.2 0.4"/></geometry></collision></link>
  <link name="tool"><collision><geometry><sphere radius="0.03"/></geometry></collision>
    <collision><geometry><mesh filename="package://r/tool.stl"/></geometry></collision></link>
  <link name="camera_link"/>
  <joint name="j1" type="revolute"><parent link="base"/><child link="upper"/></joint>
  <joint name="j2" type="revolute"><parent link="upper"/><child link="tool"/></joint>
  <joint name="j3" type="fixed"><parent link="tool"/><child link="camera_link"/></joint>
</robot>"""


def test_urdf_collision_primitives_become_the_arm_surface():
    surface, meshes = ArmSurface.from_urdf(URDF, 0.01)
    assert set(surface.links) == {"base", "upper", "tool"} and meshes == ["tool"]
    assert surface.links["base"].mount_flags.all() and not surface.links["upper"].mount_flags.any()
    upper = surface.links["upper"].points   # box turned 90 deg about y: its 0.4 m side lies along x
    assert np.allclose(upper.max(axis=0), [0.2, 0.1, 0.35], atol=1e-6)
    posed = surface.posed({"base": np.eye(4), "upper": np.eye(4), "tool": np.diag([1.0, 1.0, 1.0, 1.0])})
    assert len(posed.points) == sum(len(s.points) for s in surface.links.values())
    with pytest.raises(ValueError, match=r"<box size=\.\.\.> must hold 3 numbers, got '0.1 0.2'"):
        ArmSurface.from_urdf(URDF.replace('size="0.1 0.2 0.4"', 'size="0.1 0.2"'), 0.01)
    with pytest.raises(ValueError, match="not valid URDF XML"):
        ArmSurface.from_urdf("<robot", 0.01)


class _Transforms:
    """A transform source (TF on a robot) holding fixed link poses."""

    def __init__(self, poses: dict[str, np.ndarray]) -> None:
        self.poses = poses

    def lookup_transform(self, target_frame: str, source_frame: str, stamp: float | None) -> np.ndarray:
        if target_frame != "base" or source_frame not in self.poses:
            raise LookupError(f"no transform {target_frame} <- {source_frame}")
        return self.poses[source_frame]


def test_link_poses_from_a_transform_source_place_the_urdf_surface():
    surface, _ = ArmSurface.from_urdf(URDF, 0.01)
    lifted = np.eye(4)
    lifted[2, 3] = 0.5
    transforms = _Transforms({"base": np.eye(4), "upper": lifted, "tool": np.eye(4)})
    posed = surface.posed(link_poses(transforms, "base", surface.links, 1.0))
    upper = ~posed.mount_flags & (posed.points[:, 2] > 0.5 + 0.3 - 0.06)
    assert np.isclose(posed.points[upper, 2].max(), 0.5 + 0.35)
    with pytest.raises(LookupError, match="tool"):
        link_poses(_Transforms({"base": np.eye(4), "upper": lifted}), "base", surface.links, 1.0)


def test_arm_check_config_is_validated_with_the_value_quoted():
    base = {"base_frame": "world", "cameras": [{"name": "c", "frame_id": "c_optical",
                                                "topics": {"color": "/c", "camera_info": "/ci"}}]}
    config = RuntimeConfig.from_dict({**base, "calibration_monitor": {"urdf": "robot.urdf", "arm_min_points": 300}})
    assert config.calibration_monitor.urdf == "robot.urdf" and config.calibration_monitor.arm_min_points == 300
    assert RuntimeConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"arm_min_points: expected an integer in \[10, 100000\], got 3"):
        CalibrationMonitorConfig(arm_min_points=3)
    with pytest.raises(ConfigError, match=r"arm_spacing: expected a number > 0, got -0\.01"):
        CalibrationMonitorConfig(arm_spacing=-0.01)
