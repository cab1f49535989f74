"""action_node over real DDS: disarmed, NaN, stale, e-stop -> a zero (hold) twist is published;
armed with a fresh chunk -> the filtered motion. No sleeps: spin until a condition holds."""
from __future__ import annotations

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import TwistStamped
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import Bool
from std_srvs.srv import SetBool

from vla3d_ros import types
from vla3d_ros.ros import conversions as conv
from vla3d_ros.ros import topics
from vla3d_ros.ros.action_node import ActionNode
from vla3d_ros.ros.common import now_seconds
from vla3d_ros.ros.graph import spin_until
from vla3d_ros.ros.qos import RELIABLE_QOS
from vla3d_ros.ros.tf import TransformCache
from vla3d_ros.runtime.config import RuntimeConfig
from vla3d_ros.msg import ActionChunk as ActionChunkMsg

SERVO_TOPIC = "/test/servo/delta_twist_cmds"


def make_config(**overrides) -> RuntimeConfig:
    data = {
        "base_frame": "world", "ee_frame": "ee",
        "cameras": [{"name": "front", "frame_id": "front_optical",
                     "topics": {"color": "/test/front/color", "camera_info": "/test/front/info"}}],
        "rates": {"control_hz": 50.0, "diagnostics_hz": 2.0},
        "watchdog": {"observation_timeout": 0.5, "command_timeout": 0.2},
        "safety": {"start_in_dry_run": False, "workspace": {"min": [0.0, -0.5, 0.0], "max": [1.0, 0.5, 1.0]}},
        "output": {"servo": {"topic": SERVO_TOPIC, "frame_id": "world"}, "gripper_topic": "/test/gripper"},
    }
    data.update(overrides)
    return RuntimeConfig.from_dict(data)


@pytest.fixture
def rig(ros_context):
    transforms = TransformCache()
    ee = np.eye(4)
    ee[:3, 3] = (0.5, 0.0, 0.3)
    transforms.set_transform("world", "ee", ee, None)
    action = ActionNode(make_config(), transforms=transforms, context=ros_context)
    probe = rclpy.create_node("probe", context=ros_context)
    twists: list[TwistStamped] = []
    probe.create_subscription(TwistStamped, SERVO_TOPIC, twists.append, RELIABLE_QOS)
    chunks = probe.create_publisher(ActionChunkMsg, topics.ACTION_CHUNK, RELIABLE_QOS)
    estop = probe.create_publisher(Bool, "/vla3d/estop", RELIABLE_QOS)
    arm_client = probe.create_client(SetBool, "/vla3d_action/arm")
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(action)
    executor.add_node(probe)
    rig = dict(action=action, probe=probe, twists=twists, chunks=chunks, estop=estop, arm=arm_client,
               executor=executor)
    yield rig
    executor.shutdown()
    probe.destroy_node()
    action.destroy_node()


def send_chunk(rig, actions: np.ndarray, age: float = 0.0) -> None:
    chunk = types.ActionChunk(actions.astype(np.float32), types.EE_DELTA_ACTION_NAMES, step_period=0.1,
                              stamp=now_seconds(rig["action"]) - age)
    rig["chunks"].publish(conv.action_chunk_to_msg(chunk, "world"))


def next_twists(rig, count: int = 3) -> list[TwistStamped]:
    start = len(rig["twists"])
    assert spin_until(rig["executor"], lambda: len(rig["twists"]) >= start + count, timeout=5.0)
    return rig["twists"][start:start + count]


def is_zero(twist: TwistStamped) -> bool:
    t = twist.twist
    return all(v == 0.0 for v in (t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z))


def arm(rig, value: bool = True) -> None:
    assert rig["arm"].wait_for_service(timeout_sec=5.0)
    future = rig["arm"].call_async(SetBool.Request(data=value))
    assert spin_until(rig["executor"], future.done, timeout=5.0)
    assert future.result().success, future.result().message


def moving_chunk() -> np.ndarray:
    actions = np.zeros((10, 7))
    actions[:, 0] = 0.01          # 1 cm per 0.1 s step = 0.1 m/s along x
    actions[:, 6] = 1.0
    return actions


def wait_for_motion(rig) -> TwistStamped:
    assert spin_until(rig["executor"], lambda: rig["twists"] and not is_zero(rig["twists"][-1]), timeout=5.0)
    return rig["twists"][-1]


def test_starts_disarmed_and_holds_with_zero_twist(rig):
    send_chunk(rig, moving_chunk())
    assert all(is_zero(t) for t in next_twists(rig, 5))
    assert rig["action"].controller.last_decision.reasons[-1] == "disarmed"


def test_armed_fresh_chunk_moves_then_nan_chunk_is_refused_and_holds(rig):
    arm(rig)
    send_chunk(rig, moving_chunk())
    twist = wait_for_motion(rig)
    assert twist.twist.linear.x == pytest.approx(0.1, rel=1e-5) and twist.header.frame_id == "world"
    rig["action"].controller.executor.clear()
    bad = moving_chunk()
    bad[3, 1] = np.nan
    send_chunk(rig, bad)
    assert spin_until(rig["executor"], lambda: rig["action"].controller.executor.rejected >= 1, timeout=5.0)
    # The NaN chunk never enters the executor; after the command timeout the arm holds.
    assert spin_until(rig["executor"], lambda: rig["twists"] and is_zero(rig["twists"][-1]), timeout=5.0)
    assert "command timeout" in rig["action"].controller.last_decision.reason


def test_stale_observation_holds(rig):
    arm(rig)
    send_chunk(rig, moving_chunk(), age=0.55)   # rows still live, observation older than 0.5 s
    assert all(is_zero(t) for t in next_twists(rig, 3))
    assert "stale observation" in rig["action"].controller.last_decision.reason


def test_estop_latches_and_holds_until_reset_and_rearm(rig):
    arm(rig)
    send_chunk(rig, moving_chunk())
    wait_for_motion(rig)
    rig["estop"].publish(Bool(data=True))
    assert spin_until(rig["executor"], lambda: rig["action"].controller.state.estop_latched, timeout=5.0)
    send_chunk(rig, moving_chunk())
    assert all(is_zero(t) for t in next_twists(rig, 3))
    assert "e-stop" in rig["action"].controller.last_decision.reason
