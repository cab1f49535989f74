"""Small helpers every node shares: clock in seconds, the /diagnostics publisher, parameters."""
from __future__ import annotations

from collections.abc import Sequence

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter

from vla3d_ros.ros import topics
from vla3d_ros.ros.conversions import diagnostics_to_msg
from vla3d_ros.ros.qos import RELIABLE_QOS
from vla3d_ros.runtime.diagnostics import Level, Status


def now_seconds(node: Node) -> float:
    """The node's ROS time (sim time under use_sim_time) in seconds."""
    return node.get_clock().now().nanoseconds * 1e-9


def log_at(node: Node, level: Level, message: str, throttle: float | None = None) -> None:
    """Log at the level of a status. rclpy ties a call site to one severity (and one throttle),
    so each combination gets its own call."""
    logger = node.get_logger()
    if level >= Level.ERROR:
        logger.error(message)
    elif throttle is None:
        logger.warning(message)
    else:
        logger.warning(message, throttle_duration_sec=throttle)


def node_parameters(use_sim_time: bool) -> list[Parameter]:
    return [Parameter("use_sim_time", Parameter.Type.BOOL, use_sim_time)]


class DiagnosticsPublisher:
    """Publishes a node's statuses on /diagnostics, names prefixed with the node name."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.publisher = node.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, RELIABLE_QOS)

    def publish(self, statuses: Sequence[Status]) -> None:
        prefix = self.node.get_name()
        named = [Status(f"{prefix}: {s.name}", s.level, s.message, s.values) for s in statuses]
        self.publisher.publish(diagnostics_to_msg(named, stamp=now_seconds(self.node)))

    def destroy(self) -> None:
        self.node.destroy_publisher(self.publisher)
