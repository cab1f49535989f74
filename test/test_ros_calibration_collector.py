"""calibration_collector over real DDS: ~/capture saves the newest image with the TF end-effector
pose at its stamp; no image, no board or no pose are said in the reply. No sleeps."""
from __future__ import annotations

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from vla3d_ros.calibration.board import CharucoBoardSpec
from vla3d_ros.calibration.samples import SampleFolderWriter, load_sample_folder
from vla3d_ros.ros import conversions as conv
from vla3d_ros.ros.calibration_collector import CalibrationCollectorNode
from vla3d_ros.ros.graph import spin_until
from vla3d_ros.ros.qos import SENSOR_QOS
from vla3d_ros.ros.tf import TransformCache
from vla3d_ros.runtime.config import RuntimeConfig

BOARD = CharucoBoardSpec()
TOPIC = "/test/front/color"


@pytest.fixture
def rig(ros_context, tmp_path):
    config = RuntimeConfig.from_dict({
        "base_frame": "world", "ee_frame": "ee",
        "cameras": [{"name": "front", "frame_id": "front_optical",
                     "topics": {"color": TOPIC, "camera_info": "/test/front/info"}}]})
    transforms = TransformCache()
    writer = SampleFolderWriter(tmp_path / "samples", "front", BOARD, "world", "ee")
    node = CalibrationCollectorNode(config, "front", writer, BOARD, transforms=transforms, context=ros_context)
    probe = rclpy.create_node("probe", context=ros_context)
    images = probe.create_publisher(Image, TOPIC, SENSOR_QOS)
    client = probe.create_client(Trigger, "/vla3d_calibration/capture")
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(probe)
    yield dict(node=node, images=images, client=client, executor=executor, transforms=transforms,
               folder=tmp_path / "samples")
    executor.shutdown()
    probe.destroy_node()
    node.destroy_node()


def capture(rig) -> Trigger.Response:
    assert spin_until(rig["executor"], rig["client"].service_is_ready, timeout=10.0)
    future = rig["client"].call_async(Trigger.Request())
    assert spin_until(rig["executor"], future.done, timeout=10.0)
    return future.result()


def publish_until_received(rig, rgb: np.ndarray, stamp: float) -> None:
    msg = conv.array_to_image(rgb, "rgb8", stamp=stamp, frame_id="front_optical")

    def publish_and_check() -> bool:
        rig["images"].publish(msg)
        return rig["node"].latest_stamp == pytest.approx(stamp)
    assert spin_until(rig["executor"], publish_and_check, timeout=10.0)


def test_capture_saves_image_and_pose_and_explains_refusals(rig):
    assert capture(rig).message == f"no image on {TOPIC} yet"
    board = np.repeat(np.pad(BOARD.image(40), 30, constant_values=255)[..., None], 3, axis=2)
    publish_until_received(rig, np.full_like(board, 128), stamp=1.0)
    reply = capture(rig)
    assert not reply.success and "board not found" in reply.message
    publish_until_received(rig, board, stamp=2.0)
    reply = capture(rig)   # no pose in TF yet: intrinsics only
    assert reply.success and "intrinsics only" in reply.message and "24/24" in reply.message
    T = np.eye(4)
    T[:3, 3] = (0.4, 0.1, 0.3)
    rig["transforms"].set_transform("world", "ee", T, 3.0)
    publish_until_received(rig, board, stamp=3.0)
    reply = capture(rig)
    assert reply.success and reply.message == "sample 1: 24/24 board corners"
    folder = load_sample_folder(rig["folder"])
    assert [s.T_base_ee is None for s in folder.samples] == [True, False]
    assert np.allclose(folder.samples[1].T_base_ee, T) and np.array_equal(folder.samples[1].rgb, board)
    assert folder.board == BOARD and (folder.base_frame, folder.ee_frame) == ("world", "ee")
