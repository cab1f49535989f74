"""The policy's outputs to an MCAP bag, as `vla3d replay` and the sim bridge record them.

`OutputRecorder` subscribes to what the graph publishes (`RECORDED_OUTPUTS`: ActionChunk,
Instance3DArray, completed points, MarkerArray; plus, given `extra`, e.g. `command_outputs`: the
action node's commands and the nodes' diagnostics) and writes the serialised CDR as received; it
keeps the ActionChunks it saw (as `types.ActionChunk`) for the caller's metrics and can `drain`
until everything the graph published has been written.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from rclpy.executors import Executor
from rclpy.node import Node
from rclpy.serialization import serialize_message
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Float64
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

import vla3d_ros.msg
from vla3d_ros.ros import conversions
from vla3d_ros.ros import topics
from vla3d_ros.ros.graph import NodeGraph, spin_until
from vla3d_ros.ros.qos import RELIABLE_QOS
from vla3d_ros.ros.recorder import output_typestore, ros_type_name
from vla3d_ros.runtime.config import RuntimeConfig

# topic -> (message class, ROS type name) of the policy outputs the replay records and waits for.
RECORDED_OUTPUTS = {
    topics.ACTION_CHUNK: (vla3d_ros.msg.ActionChunk, "vla3d_ros/msg/ActionChunk"),
    topics.INSTANCES: (vla3d_ros.msg.Instance3DArray, "vla3d_ros/msg/Instance3DArray"),
    topics.COMPLETED_POINTS: (PointCloud2, "sensor_msgs/msg/PointCloud2"),
    topics.MARKERS: (MarkerArray, "visualization_msgs/msg/MarkerArray"),
}


def command_outputs(config: RuntimeConfig) -> dict[str, type]:
    """topic -> message class of what the action node and the nodes' diagnostics publish."""
    outputs = {topics.DRY_RUN_COMMANDS: TwistStamped, topics.DRY_RUN_TRAJECTORY: JointTrajectory,
               topics.DIAGNOSTICS: DiagnosticArray, topics.INFERENCE_TIMING: DiagnosticArray}
    if config.output.adapter == "servo":
        outputs[config.output.servo.topic] = TwistStamped
    else:
        outputs[config.output.ros2_control.topic] = JointTrajectory
    if config.output.gripper_topic:
        outputs[config.output.gripper_topic] = Float64
    return outputs


class OutputRecorder(Node):
    """Records the graph's outputs (serialised CDR, as received) into an MCAP bag: the policy's
    (`RECORDED_OUTPUTS`) and, given `extra` ({topic: message class}), e.g. `command_outputs`."""

    def __init__(self, output: str | Path, *, extra: Mapping[str, type] | None = None, context=None,
                 name: str = "vla3d_recorder") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        super().__init__(name, context=context)
        self.output = Path(output)
        if self.output.exists():
            raise FileExistsError(f"output bag {self.output} exists already; not overwriting")
        store = output_typestore()
        self._writer = Writer(self.output, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        recorded = dict(RECORDED_OUTPUTS)
        for topic, msg_type in (extra or {}).items():
            recorded.setdefault(topic, (msg_type, ros_type_name(msg_type)))
        self.counts = {topic: 0 for topic in recorded}
        self.chunks: list = []   # types.ActionChunk, for the metrics
        for topic, (msg_type, type_name) in recorded.items():
            connection = self._writer.add_connection(topic, type_name, typestore=store)
            self.create_subscription(msg_type, topic, self._recorder(topic, connection), RELIABLE_QOS)

    def _recorder(self, topic: str, connection):
        def record(msg) -> None:
            stamp = msg.header.stamp if hasattr(msg, "header") else (
                msg.markers[-1].header.stamp if msg.markers else None)
            stamp_ns = self.get_clock().now().nanoseconds if stamp is None else stamp.sec * 1_000_000_000 + stamp.nanosec
            self._writer.write(connection, stamp_ns, serialize_message(msg))
            self.counts[topic] += 1
            if topic == topics.ACTION_CHUNK:
                self.chunks.append(conversions.msg_to_action_chunk(msg))
        return record

    def caught_up(self, published: Mapping[str, int]) -> bool:
        """At least `published[topic]` messages recorded on every recorded topic."""
        return all(self.counts[topic] >= published.get(topic, 0) for topic in RECORDED_OUTPUTS)

    def drain(self, graph: NodeGraph, executor: Executor, timeout: float) -> bool:
        """Spin until everything the graph published has been recorded, the MarkerArrays of its last
        outputs included; False (and a warning) if that takes more than `timeout` wall seconds."""
        if spin_until(executor, lambda: graph.outputs_handled() and self.caught_up(graph.published()), timeout):
            return True
        published = graph.published()
        missing = {topic: published[topic] - self.counts[topic] for topic in RECORDED_OUTPUTS
                   if published[topic] > self.counts[topic]}
        self.get_logger().warning(f"after {timeout} s, published outputs not recorded yet: {missing or 'markers'}")
        return False

    def close(self) -> None:
        self._writer.close()

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()
