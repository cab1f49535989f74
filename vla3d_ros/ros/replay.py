"""Bag replay through the live graph: `vla3d replay BAG`.

A bag written by `vla3d convert` (`vla3d_ros.data.bags`, read with rosbags: no rosbag2 here) is
played step by step by a `LockstepPlayer` (owning /clock, use_sim_time everywhere) on the topics
of a runtime config, through the same graph `vla3d bringup` builds; inference runs on every
`1 / rates.inference_hz` seconds of bag time. An `OutputRecorder` writes what the graph
publishes (ActionChunk, Instance3DArray, completed points, MarkerArray) to a new MCAP bag, and
the open-loop metrics compare each chunk's first row with the action recorded at its step:
mean absolute error (L1) per action dimension.
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import Executor
from rclpy.node import Node
from rclpy.serialization import serialize_message
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import MarkerArray

from vla3d_ros.msg import ActionChunk as ActionChunkMsg
from vla3d_ros.msg import Instance3DArray
from vla3d_ros.ros import conversions as conv
from vla3d_ros.ros import topics
from vla3d_ros.ros.graph import NodeGraph, build_graph, spin_until
from vla3d_ros.ros.player import LockstepPlayer, StepCommand
from vla3d_ros.ros.qos import RELIABLE_QOS
from vla3d_ros.runtime.config import RuntimeConfig
from vla3d_ros.types import Observation

# topic -> (message class, ROS type name) of what the replay records.
RECORDED_OUTPUTS = {
    topics.ACTION_CHUNK: (ActionChunkMsg, "vla3d_ros/msg/ActionChunk"),
    topics.INSTANCES: (Instance3DArray, "vla3d_ros/msg/Instance3DArray"),
    topics.COMPLETED_POINTS: (PointCloud2, "sensor_msgs/msg/PointCloud2"),
    topics.MARKERS: (MarkerArray, "visualization_msgs/msg/MarkerArray"),
}


class BagSource:
    """`StepSource` over a bag's steps: one episode, open loop (commands are ignored)."""

    def __init__(self, bag_path: str | Path) -> None:
        from vla3d_ros.data.bags import BagReader

        with BagReader(bag_path) as reader:
            self.meta = reader.meta
            self.steps = list(reader)
        if not self.steps:
            raise ValueError(f"{bag_path} has no steps")
        self.recorded_actions = np.stack([step.action for step in self.steps])   # (T, A)
        self._next = 0
        self._played = False

    @property
    def stamps(self) -> np.ndarray:
        return np.array([step.observation.stamp for step in self.steps])

    def reset(self) -> Observation | None:
        if self._played:
            return None
        self._played = True
        self._next = 1
        return self.steps[0].observation

    def advance(self, command: StepCommand) -> Observation | None:
        if self._next >= len(self.steps):
            return None
        self._next += 1
        return self.steps[self._next - 1].observation


def _msg_text_dirs() -> list[Path]:
    dirs = [Path(__file__).resolve().parents[2] / "msg"]
    dirs += [Path(prefix) / "share" / "vla3d_ros" / "msg"
             for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if prefix]
    return dirs


def output_typestore():
    """rosbags typestore knowing every type the replay records (ours registered from msg/)."""
    from rosbags.typesys import get_types_from_msg

    from vla3d_ros.data.bags import typestore

    store = typestore()
    for name in ("Instance3D", "Instance3DArray"):
        full = f"vla3d_ros/msg/{name}"
        if full in store.fielddefs:
            continue
        for directory in _msg_text_dirs():
            if (directory / f"{name}.msg").is_file():
                store.register(get_types_from_msg((directory / f"{name}.msg").read_text(), full))
                break
        else:
            raise FileNotFoundError(f"{name}.msg not found in {[str(d) for d in _msg_text_dirs()]}")
    return store


class OutputRecorder(Node):
    """Records the graph's outputs (serialised CDR, as received) into an MCAP bag."""

    def __init__(self, output: str | Path, *, context=None, name: str = "vla3d_recorder") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        super().__init__(name, context=context)
        self.output = Path(output)
        if self.output.exists():
            raise FileExistsError(f"output bag {self.output} exists already; not overwriting")
        store = output_typestore()
        self._writer = Writer(self.output, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self.counts = {topic: 0 for topic in RECORDED_OUTPUTS}
        self.chunks: list = []   # types.ActionChunk, for the metrics
        for topic, (msg_type, type_name) in RECORDED_OUTPUTS.items():
            connection = self._writer.add_connection(topic, type_name, typestore=store)
            self.create_subscription(msg_type, topic, self._recorder(topic, connection), RELIABLE_QOS)

    def _recorder(self, topic: str, connection):
        def record(msg) -> None:
            stamp = msg.header.stamp if hasattr(msg, "header") else (
                msg.markers[-1].header.stamp if msg.markers else None)
            stamp_ns = time.time_ns() if stamp is None else stamp.sec * 1_000_000_000 + stamp.nanosec
            self._writer.write(connection, stamp_ns, serialize_message(msg))
            self.counts[topic] += 1
            if topic == topics.ACTION_CHUNK:
                self.chunks.append(conv.msg_to_action_chunk(msg))
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


@dataclass
class ReplayReport:
    steps: int
    chunks: int
    counts: dict[str, int]
    action_l1: dict[str, float]               # per action dimension, mean |predicted - recorded|
    matched: int                              # chunks whose stamp matched a recorded step
    timeouts: int
    output: Path
    wall_seconds: float
    dimension_names: tuple[str, ...] = field(default_factory=tuple)

    def format(self) -> str:
        l1 = "  ".join(f"{name}={value:.4f}" for name, value in self.action_l1.items())
        return (f"replayed {self.steps} steps in {self.wall_seconds:.1f} s: {self.chunks} chunks "
                f"({self.matched} matched to recorded actions), {self.timeouts} timeouts\n"
                f"recorded: {', '.join(f'{t}={n}' for t, n in self.counts.items())} -> {self.output}\n"
                f"open-loop action L1 per dimension: {l1}")


def open_loop_l1(chunks, stamps: np.ndarray, recorded: np.ndarray, offset: float) -> tuple[dict[str, float], int]:
    """Mean |first row - recorded action| per dimension over the chunks matched to a step by stamp."""
    errors, names = [], ()
    for chunk in chunks:
        step = int(np.argmin(np.abs(stamps + offset - chunk.stamp)))
        if abs(stamps[step] + offset - chunk.stamp) > 1e-6 or chunk.actions.shape[1] != recorded.shape[1]:
            continue
        errors.append(np.abs(chunk.actions[0].astype(np.float64) - recorded[step]))
        names = chunk.dimension_names
    if not errors:
        return {}, 0
    return dict(zip(names, np.mean(errors, axis=0).tolist())), len(errors)


def replay_bag(bag: str | Path, config: RuntimeConfig, output: str | Path, *, checkpoint: str | None = None,
               policy_loader=None, context=None, timeout: float = 60.0) -> ReplayReport:
    """Play `bag` through the graph in-process, record the outputs to `output`, report metrics."""
    source = BagSource(bag)
    own_context = context is None
    if own_context:
        context = rclpy.context.Context()
        rclpy.init(context=context)
    graph: NodeGraph | None = None
    start = time.monotonic()
    try:
        graph = build_graph(config, context=context, use_sim_time=True, trigger="observation",
                            checkpoint=checkpoint, policy_loader=policy_loader)
        recorder = graph.add(OutputRecorder(output, context=context))
        player = graph.add(LockstepPlayer(graph.config, source, graph.transform_sink,
                                          inference_period=1.0 / graph.config.rates.inference_hz,
                                          consume_commands=False, timeout=timeout, context=context,
                                          name="vla3d_replay"))
        graph.start()
        executor = graph.executor(multithreaded=False)
        graph.wait_connected(executor, timeout=timeout)   # before the first step goes out
        player.start()
        spin_until(executor, lambda: player.finished, timeout=timeout * (len(source.steps) + 1))
        recorder.drain(graph, executor, timeout=timeout)   # the last outputs are still in flight
        action_l1, matched = open_loop_l1(recorder.chunks, source.stamps, source.recorded_actions,
                                          player.offsets[0])
        return ReplayReport(steps=player.stats.steps, chunks=len(recorder.chunks), counts=dict(recorder.counts),
                            action_l1=action_l1, matched=matched,
                            timeouts=player.stats.chunk_timeouts + player.stats.command_timeouts,
                            output=Path(output), wall_seconds=time.monotonic() - start)
    finally:
        if graph is not None:
            graph.destroy()
        if own_context:
            rclpy.shutdown(context=context)
