"""camera_sync_node over real DDS: an Observation published on the config's topics comes back
exactly (images, depth, calibration, extrinsics, proprioception), per-camera statistics reach
/diagnostics, and a depth-encoding mix-up is refused naming the camera."""
from __future__ import annotations

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState

from ros_graph_fixtures import observation, runtime_config
from vla3d_ros.ros import conversions as conv
from vla3d_ros.ros import topics
from vla3d_ros.ros.camera_sync_node import CameraSyncNode
from vla3d_ros.ros.graph import spin_until
from vla3d_ros.ros.player import ObservationPublisher
from vla3d_ros.ros.qos import RELIABLE_QOS
from vla3d_ros.ros.tf import TransformCache


@pytest.fixture
def rig(ros_context, request):
    depth_encoding = getattr(request, "param", "32FC1")
    config = runtime_config()
    transforms = TransformCache()
    sync = CameraSyncNode(config, transforms=transforms, context=ros_context)
    if depth_encoding != "32FC1":   # the publisher's config says 16UC1, the node's says 32FC1
        data = config.to_dict()
        for camera in data["cameras"]:
            camera["depth_encoding"] = depth_encoding
        config = type(config).from_dict(data)
    probe = rclpy.create_node("probe", context=ros_context)
    publisher = ObservationPublisher(probe, config, transforms)
    diagnostics: list[DiagnosticArray] = []
    probe.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, diagnostics.append, RELIABLE_QOS)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(sync)
    executor.add_node(probe)
    assert spin_until(executor, lambda: all(probe.count_subscribers(c.topics.color) for c in config.cameras),
                      timeout=10.0)
    yield sync, publisher, executor, diagnostics
    executor.shutdown()
    probe.destroy_node()
    sync.destroy_node()


def joint_state_received(sync, stamp: float) -> bool:
    return len(sync._joint_states) > 0 and \
        conv.time_to_seconds(sync._joint_states.nearest(stamp).header.stamp) == pytest.approx(stamp, abs=1e-9)


def play(sync, publisher, executor, obs) -> None:
    publisher.publish(obs)
    assert spin_until(executor, lambda: sync.latest_stamp == obs.stamp and joint_state_received(sync, obs.stamp)
                      and sync._gripper is not None, timeout=10.0)


def test_observation_round_trips_exactly(rig):
    sync, publisher, executor, _ = rig
    sent = observation(3, np.random.default_rng(0))
    play(sync, publisher, executor, sent)
    got = sync.observation("pick up the red cube")
    assert got.camera_names == sent.camera_names and got.stamp == sent.stamp
    np.testing.assert_array_equal(got.rgb, sent.rgb)
    np.testing.assert_array_equal(got.depth, sent.depth)
    np.testing.assert_array_equal(got.intrinsics, sent.intrinsics)
    np.testing.assert_allclose(got.T_base_cam, sent.T_base_cam, atol=1e-12)
    np.testing.assert_array_equal(got.joint_positions, sent.joint_positions)
    np.testing.assert_allclose(got.ee_pose, sent.ee_pose, atol=1e-6)
    assert got.gripper == sent.gripper and got.joint_names == sent.joint_names


def test_the_set_gets_the_joint_state_of_its_instant(rig):
    """Joint states stream faster than the cameras: by the time a set is used, newer ones have
    arrived; the observation takes the one stamped nearest the set, not the newest."""
    sync, publisher, executor, _ = rig
    sent = observation(3, np.random.default_rng(0))
    play(sync, publisher, executor, sent)
    joint_publisher = publisher.node.create_publisher(JointState, sync.config.joint_state_topic, RELIABLE_QOS)
    later = sent.stamp + 0.03
    joint_publisher.publish(conv.arrays_to_joint_state(sent.joint_names, sent.joint_positions + 1.0, stamp=later))
    assert spin_until(executor, lambda: joint_state_received(sync, later), timeout=10.0)
    np.testing.assert_array_equal(sync.observation("pick up the red cube").joint_positions, sent.joint_positions)


def test_per_camera_statistics_reach_diagnostics(rig):
    sync, publisher, executor, diagnostics = rig
    rng = np.random.default_rng(1)
    for t in range(3):
        play(sync, publisher, executor, observation(t, rng))
    assert spin_until(executor, lambda: any(
        any(s.name == "vla3d_camera_sync: wrist/depth" for s in array.status) for array in diagnostics), timeout=5.0)
    status = {s.name: s for s in diagnostics[-1].status}
    color = {kv.key: kv.value for kv in status["vla3d_camera_sync: front/color"].values}
    assert color["received"] == "3" and color["dropped"] == "0"
    assert status["vla3d_camera_sync: calibration"].level == bytes([0])
    assert {kv.key: kv.value for kv in status["vla3d_camera_sync: sync"].values}["sets"] == "3"


@pytest.mark.parametrize("rig", ["16UC1"], indirect=True)
def test_depth_encoding_mix_up_is_refused_naming_the_camera(rig):
    sync, publisher, executor, _ = rig
    play(sync, publisher, executor, observation(0, np.random.default_rng(2)))
    with pytest.raises(ValueError, match="camera 'front': depth encoding '16UC1' but the config says '32FC1'"):
        sync.observation("pick up the red cube")
