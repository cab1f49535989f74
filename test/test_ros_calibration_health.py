"""The calibration health monitor in camera_sync_node over real DDS: simulated RGB-D frames with
the true calibration keep /diagnostics OK; the same frames with the front camera's extrinsics
2 deg stale give a WARN naming it within 5 s, and with hold_on_miscalibration no observation."""
from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor

from ros_graph_fixtures import runtime_config
from vla3d_ros.geometry import displace_camera, euler_xyz_to_matrix
from vla3d_ros.ros import conversions as conv
from vla3d_ros.ros import topics
from vla3d_ros.ros.camera_sync_node import CameraSyncNode
from vla3d_ros.ros.graph import spin_until
from vla3d_ros.ros.player import ObservationPublisher
from vla3d_ros.ros.qos import RELIABLE_QOS
from vla3d_ros.ros.tf import TransformCache
from vla3d_ros.runtime.calibration import CalibrationMissing
from vla3d_ros.runtime.diagnostics import Level
from vla3d_ros.sim.env import TabletopEnv
from vla3d_ros.sim.perturbations import parse_perturbation

CAMERAS = ("front", "side", "wrist")


@pytest.fixture(scope="module")
def sim_observation():
    env = TabletopEnv("push_to_zone", image_size=(256, 256), perturbations=[parse_perturbation("sensor_noise:2")])
    try:
        return env.reset(seed=1)
    finally:
        env.close()


@contextmanager
def monitored_sync(ros_context, **monitor):
    """camera_sync_node with its calibration monitor (`monitor` overrides), a probe publishing
    observations into it, and the calibration_health statuses it publishes."""
    # consecutive 1: the node's path from images to /diagnostics is what is timed here; the
    # averaging over checks is test_calibration_health's
    config = runtime_config(CAMERAS, calibration_monitor={"enabled": True, "check_hz": 2.0, "consecutive": 1,
                                                         **monitor},
                            rates={"inference_hz": 5.0, "control_hz": 10.0, "diagnostics_hz": 4.0})
    transforms = TransformCache()
    sync = CameraSyncNode(config, transforms=transforms, context=ros_context)
    probe = rclpy.create_node("probe", context=ros_context)
    publisher = ObservationPublisher(probe, config, transforms)
    health: list[tuple[float, Level, str]] = []

    def on_diagnostics(msg: DiagnosticArray) -> None:
        statuses = [conv.msg_to_status(status) for status in msg.status]
        health.extend((time.monotonic(), status.level, status.message) for status in statuses
                      if status.name.endswith("calibration_health"))
    probe.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, on_diagnostics, RELIABLE_QOS)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(sync)
    executor.add_node(probe)
    try:
        yield sync, publisher, executor, health, transforms
    finally:
        executor.shutdown()
        probe.destroy_node()
        sync.destroy_node()


@pytest.fixture
def rig(ros_context):
    with monitored_sync(ros_context, hold_on_miscalibration=True) as (sync, publisher, executor, health, _):
        yield sync, publisher, executor, health


def stream_until(sync, publisher, executor, observation, condition, timeout: float) -> bool:
    """Publish `observation` with a fresh stamp whenever the node has assembled the previous one
    (a camera driver's stream, paced by the node) until `condition()` holds."""
    sent = [None]

    def publish_and_check() -> bool:
        if sent[0] is None or sync.latest_stamp == sent[0]:
            sent[0] = conv.time_to_seconds(sync.get_clock().now().to_msg())
            publisher.publish(dataclasses.replace(observation, stamp=sent[0]))
        return condition()
    return spin_until(executor, publish_and_check, timeout=timeout, step=0.02)


def test_stale_extrinsics_warn_naming_the_camera_within_5_s_and_hold(rig, sim_observation):
    sync, publisher, executor, health = rig
    assert stream_until(sync, publisher, executor, sim_observation,
                        lambda: sum(level == Level.OK for _, level, _ in health) >= 3, timeout=30.0), health[-3:]
    assert all(level != Level.WARN for _, level, _ in health)
    sync.observation("push")   # no hold while the calibration is consistent

    # the front camera turned 2 deg (about base x, through its centre); its calibration did not follow
    front = sim_observation.camera_names.index("front")
    T_base_cam = sim_observation.T_base_cam.copy()
    T_base_cam[front] = displace_camera(T_base_cam[front], rotation=euler_xyz_to_matrix(-np.radians(2.0), 0.0, 0.0))
    stale = dataclasses.replace(sim_observation, T_base_cam=T_base_cam)
    start = time.monotonic()
    assert stream_until(sync, publisher, executor, stale,
                        lambda: any(level == Level.WARN and t > start for t, level, _ in health), timeout=10.0)
    when, _, message = next((t, level, m) for t, level, m in health if level == Level.WARN and t > start)
    print(f"WARN {when - start:.2f} s after the move")
    assert when - start < 5.0, f"WARN after {when - start:.1f} s"
    assert "camera 'front' appears moved by" in message
    with pytest.raises(CalibrationMissing, match="holding .*camera 'front'"):
        sync.observation("push")


ARM_URDF = """<robot name="arm">
  <link name="upper"><collision><geometry><box size="0.1 0.1 0.2"/></geometry></collision></link>
</robot>"""


def test_the_arm_check_places_the_urdf_links_by_tf_and_is_skipped_without_them(ros_context, sim_observation,
                                                                                tmp_path):
    urdf = tmp_path / "arm.urdf"
    urdf.write_text(ARM_URDF)
    with monitored_sync(ros_context, urdf=str(urdf)) as (sync, publisher, executor, _, transforms):
        assert set(sync._arm_surface.links) == {"upper"}
        arms = []
        check = sync.health.check

        def recording_check(stamp, views, arm=None):
            arms.append(arm)
            return check(stamp, views, arm)
        sync.health.check = recording_check
        assert stream_until(sync, publisher, executor, sim_observation, lambda: len(arms) >= 1, timeout=20.0)
        assert arms[0] is None            # no TF for the link yet: the cross-view check ran alone
        T_world_upper = np.eye(4)
        T_world_upper[:3, 3] = [0.5, -0.1, 0.3]
        transforms.set_transform("world", "upper", T_world_upper, None)
        assert stream_until(sync, publisher, executor, sim_observation,
                            lambda: arms[-1] is not None, timeout=20.0)
        posed = arms[-1].points            # the box's surface, where TF puts the link
        assert np.allclose(posed.mean(axis=0), [0.5, -0.1, 0.3], atol=0.01)
        assert np.allclose(posed.max(axis=0) - posed.min(axis=0), [0.1, 0.1, 0.2], atol=1e-6)
