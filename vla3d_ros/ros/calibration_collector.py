"""calibration_collector: saves a calibration sample (image + end-effector pose) when asked.

Wiring only: the newest image of one configured camera, the TF pose `base_frame <- ee_frame` at
its stamp (`ros/tf.py`), `calibration.board` to say how much of the board is seen, and
`calibration.samples.SampleFolderWriter` to store it. Service `~/capture` (std_srvs/Trigger):
move the robot, call it, read the reply ("sample 3: 24/24 board corners"), repeat; then run
`vla3d calibrate intrinsics|handeye --images DIR` on the folder. A view where the board is not
found is not saved (the reply says so). Without an end-effector pose (no TF) the sample is saved
for intrinsics only.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from vla3d_ros.calibration.board import CharucoBoardSpec
from vla3d_ros.calibration.samples import SampleFolderWriter
from vla3d_ros.ros import conversions
from vla3d_ros.ros.common import node_parameters
from vla3d_ros.ros.qos import SENSOR_QOS
from vla3d_ros.runtime.calibration import TransformSource
from vla3d_ros.runtime.config import RuntimeConfig


class CalibrationCollectorNode(Node):
    def __init__(self, config: RuntimeConfig, camera: str, writer: SampleFolderWriter, board: CharucoBoardSpec, *,
                 transforms: TransformSource | None = None, use_sim_time: bool = False, context=None,
                 name: str = "vla3d_calibration") -> None:
        super().__init__(name, context=context, parameter_overrides=node_parameters(use_sim_time))
        self.config = config
        self.topic = config.camera(camera).topics.color
        self.writer = writer
        self.board = board
        self.transforms = transforms
        self._lock = threading.Lock()
        self._latest: Image | None = None
        self.create_subscription(Image, self.topic, self._on_image, SENSOR_QOS)
        self.create_service(Trigger, "~/capture", self._on_capture)

    def _on_image(self, msg: Image) -> None:
        with self._lock:
            self._latest = msg

    @property
    def latest_stamp(self) -> float | None:
        """Stamp (s) of the image the next capture would save; None before the first."""
        with self._lock:
            return None if self._latest is None else conversions.time_to_seconds(self._latest.header.stamp)

    def _ee_pose(self, stamp: float) -> tuple[np.ndarray | None, str]:
        if self.transforms is None or not self.config.ee_frame:
            return None, "no end-effector pose source (ee_frame / TF): saved for intrinsics only"
        try:
            return self.transforms.lookup_transform(self.config.base_frame, self.config.ee_frame, stamp), ""
        except LookupError as error:
            return None, f"no end-effector pose ({error}): saved for intrinsics only"

    def _on_capture(self, request, response):
        with self._lock:
            msg = self._latest
        if msg is None:
            response.success, response.message = False, f"no image on {self.topic} yet"
            return response
        try:
            rgb = conversions.image_to_rgb(msg)
        except ValueError as error:
            response.success, response.message = False, f"{self.topic}: {error}"
            return response
        detection = self.board.detect(rgb)
        if detection is None:
            response.success, response.message = False, "board not found in the image: sample not saved"
            return response
        stamp = conversions.time_to_seconds(msg.header.stamp)
        T_base_ee, note = self._ee_pose(stamp)
        self.writer.add(rgb, T_base_ee, stamp)
        response.success = True
        response.message = (f"sample {len(self.writer) - 1}: {len(detection.ids)}/{self.board.num_corners} "
                            f"board corners" + (f"; {note}" if note else ""))
        self.get_logger().info(response.message)
        return response


def run_collector(config_path: Path, camera: str, out: Path, board: CharucoBoardSpec, *,
                  use_sim_time: bool = False) -> int:
    """`vla3d calibrate collect`: run the node until Ctrl-C."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from vla3d_ros.ros.tf import TransformCache, make_transform_source
    from vla3d_ros.runtime.config import load_runtime_config

    config = load_runtime_config(config_path)
    config.camera(camera)   # KeyError naming the configured cameras
    writer = SampleFolderWriter(out, camera, board, config.base_frame, config.ee_frame)
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = None
    try:
        node = CalibrationCollectorNode(config, camera, writer, board, use_sim_time=use_sim_time, context=context)
        # without tf2_ros nothing fills the cache: samples are then for intrinsics only (said per sample)
        node.transforms = make_transform_source(node, TransformCache())
        print(f"vla3d calibrate collect: {node.topic} -> {out}; call "
              f"`ros2 service call /{node.get_name()}/capture std_srvs/srv/Trigger` per pose (Ctrl-C to stop)",
              flush=True)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if context.ok():
            rclpy.shutdown(context=context)
    print(f"{len(writer)} samples in {out}")
    return 0
