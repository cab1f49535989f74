"""markers_node: the policy's 3D beliefs as RViz markers.

Subscribes to the inference outputs (Instance3DArray, ActionChunk) and publishes one MarkerArray
per step on `topics.MARKERS`: a sphere per instance at its centroid coloured by id, a text with
its score and uncertainty, and the planned end-effector path of the newest chunk (a line strip
from the EE pose at the chunk's observation stamp, TF base_frame <- ee_frame). The completed
points are already a PointCloud2 (`topics.COMPLETED_POINTS`, from the inference node) that RViz
shows directly (config/vla3d.rviz).
"""
from __future__ import annotations

from collections import Counter

from rclpy.node import Node
from visualization_msgs.msg import MarkerArray

import vla3d_ros.msg
from vla3d_ros.msg import Instance3DArray
from vla3d_ros.ros import conversions
from vla3d_ros.ros import topics
from vla3d_ros.ros.common import declare_config, node_parameters
from vla3d_ros.ros.qos import RELIABLE_QOS
from vla3d_ros.runtime.calibration import TransformSource
from vla3d_ros.runtime.config import RuntimeConfig


class MarkersNode(Node):
    def __init__(self, config: RuntimeConfig | None = None, *, transforms: TransformSource | None = None,
                 use_sim_time: bool = False, context=None, name: str = "vla3d_markers") -> None:
        super().__init__(name, context=context, parameter_overrides=node_parameters(use_sim_time))
        self.config = config = declare_config(self, config)
        self.transforms = transforms
        self._instance_markers = []
        self._path_markers = []
        self.handled: Counter[str] = Counter()     # input topic -> messages turned into markers
        self.published: Counter[str] = Counter()   # topics.MARKERS -> arrays published
        self.publisher = self.create_publisher(MarkerArray, topics.MARKERS, RELIABLE_QOS)
        self.create_subscription(Instance3DArray, topics.INSTANCES, self._on_instances, RELIABLE_QOS)
        self.create_subscription(vla3d_ros.msg.ActionChunk, topics.ACTION_CHUNK, self._on_chunk, RELIABLE_QOS)

    def _on_instances(self, msg: Instance3DArray) -> None:
        self._instance_markers = conversions.instance_markers(
            conversions.msg_to_instances(msg), frame_id=msg.header.frame_id,
            stamp=conversions.time_to_seconds(msg.header.stamp))
        self._publish(topics.INSTANCES)

    def _on_chunk(self, msg: vla3d_ros.msg.ActionChunk) -> None:
        try:
            chunk = conversions.msg_to_action_chunk(msg)
            ee = self.transforms.lookup_transform(self.config.base_frame, self.config.ee_frame, chunk.stamp) \
                if self.transforms is not None and self.config.ee_frame else None
            self._path_markers = [] if ee is None else [conversions.planned_path_marker(
                chunk, ee[:3, 3], stamp=chunk.stamp, frame_id=self.config.base_frame)]
        except (LookupError, ValueError) as error:
            self.get_logger().warning(f"no planned path for this chunk: {error}", throttle_duration_sec=10.0)
            self._path_markers = []
        self._publish(topics.ACTION_CHUNK)

    def _publish(self, handled: str) -> None:
        self.publisher.publish(conversions.marker_array(self._instance_markers + self._path_markers))
        self.handled[handled] += 1
        self.published[topics.MARKERS] += 1
