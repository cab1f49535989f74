"""Small helpers every node shares: clock in seconds, the /diagnostics publisher, parameters."""
from __future__ import annotations

from collections.abc import Sequence

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from vla3d_ros.ros import topics
from vla3d_ros.ros.conversions import diagnostics_to_msg
from vla3d_ros.ros.qos import RELIABLE_QOS
from vla3d_ros.runtime.config import ConfigError, RuntimeConfig, load_runtime_config
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
    """Overrides a node is built with: sim time when asked for. Nothing otherwise, so a node
    executable follows `use_sim_time` from its params file or `-p use_sim_time:=true`."""
    return [Parameter("use_sim_time", Parameter.Type.BOOL, True)] if use_sim_time else []


def describe(description: str, *, read_only: bool = False, constraints: str = "",
             integer_range: tuple[int, int] | None = None) -> ParameterDescriptor:
    """A parameter's descriptor, what `ros2 param describe` prints; rclpy enforces the range
    and read-only flag on every set."""
    descriptor = ParameterDescriptor(description=description, read_only=read_only,
                                     additional_constraints=constraints)
    if integer_range is not None:
        descriptor.integer_range = [IntegerRange(from_value=integer_range[0], to_value=integer_range[1], step=1)]
    return descriptor


def declare_config(node: Node, config: RuntimeConfig | None) -> RuntimeConfig:
    """Declare the read-only `config` parameter (the runtime YAML's path) and return the config:
    `config` when given (`vla3d bringup` builds every node from one loaded file), else the file the
    parameter names (a node executable started by launch_ros or `ros2 run`); ConfigError if none."""
    path = node.declare_parameter("config", "", describe(
        "runtime YAML (cameras, frames, rates, watchdogs, safety limits, output adapter) this node was "
        "built from; empty when the config was handed over in-process (vla3d bringup)", read_only=True)).value
    if config is not None:
        return config
    if not path:
        raise ConfigError("parameter `config` is empty: pass the runtime YAML with "
                          "`--ros-args -p config:=/path/robot.yaml` or a params file")
    return load_runtime_config(path)


class DiagnosticsPublisher:
    """Publishes a node's statuses on /diagnostics, names prefixed with the node name, and logs
    every change of a status's level: a fault seen only by whoever watches /diagnostics is missed
    in the field (the log is what gets attached to a bug report). WARN/ERROR go to the log at that
    severity, a return to OK at info; a status that stays at one level is logged once, however its
    message changes (a silent stream's age grows every tick), so a steady fault is not a flood.
    A status flapping between two levels logs at most once per publish (`rates.diagnostics_hz`).
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.publisher = node.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, RELIABLE_QOS)
        self._levels: dict[str, Level] = {}   # status name -> level last published

    def publish(self, statuses: Sequence[Status]) -> None:
        for status in statuses:
            self._log_transition(status)
        prefix = self.node.get_name()
        named = [Status(f"{prefix}: {s.name}", s.level, s.message, s.values) for s in statuses]
        self.publisher.publish(diagnostics_to_msg(named, stamp=now_seconds(self.node)))

    def _log_transition(self, status: Status) -> None:
        previous = self._levels.get(status.name)
        self._levels[status.name] = status.level
        if status.level == previous or (previous is None and status.level == Level.OK):
            return
        line = f"{status.name}: {status.message}"
        if status.level in (Level.WARN, Level.ERROR):
            log_at(self.node, status.level, line)
        else:  # OK again, or STALE (not started yet): information, not a fault
            was = "" if previous is None else f" (was {previous.name})"
            self.node.get_logger().info(line + was)

    def destroy(self) -> None:
        self.node.destroy_publisher(self.publisher)
