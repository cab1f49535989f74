"""Record topics to a ROS 2 bag (MCAP or sqlite3) without blocking callbacks or losing messages.

`BagRecorder` is a node with one raw subscription per topic (the serialised CDR bytes, as
`ros2 bag record` stores them: nothing is deserialised). Its callbacks only append
(connection, receive time, bytes) to an unbounded in-memory queue; a writer thread drains the
queue into the bag (rosbags, so no rosbag2 install is needed). A slow or stalled disk therefore
delays the *file*, never the executor that also runs the robot's nodes, and no message is dropped
for lack of space in a queue (write-behind; the price is memory, which `statuses()` reports as the
queue depth and bytes, WARN above `warn_queue_bytes`).

Subscriptions are reliable, keep-last `RECORDER_QOS.depth` (1000): DDS acknowledges a sample
when it reaches the reader's history, independent of the executor, so a reliable publisher's
samples are lost only if the executor falls 1000 messages behind on one topic. (A best-effort
publisher, e.g. a camera driver on sensor-data QoS, can still lose samples on the wire: record
those from a reliable republisher, as the soak and fault tests do.)

Receive time on the node's clock (sim time under use_sim_time) is the bag log time, as in
rosbag2. Message types come from the message classes; the bag's schemas come from the rosbags
typestore that the replay uses (standard messages + this package's msg/ files).

Transforms: tf2_msgs has no Python wheel here, so /tf cannot be subscribed to. `TransformTee`
sits between an in-process transform producer (sim bridge, replay) and its `TransformSink` and
hands every transform to `record_transform`, which writes it as a robot's bag holds it:
tf2_msgs/TFMessage on /tf, or once on /tf_static (again when it changes) for frames that never
move, so converters and `ros2 bag play` find the usual TF topics.
"""
from __future__ import annotations

import os
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from vla3d_ros.ros.common import DiagnosticsPublisher, node_parameters
from vla3d_ros.runtime.diagnostics import Level, Status

RECORDER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
STORAGES = ("mcap", "sqlite3")
_STOP = object()


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


def ros_type_name(msg_class: type) -> str:
    """"pkg/msg/Name" of a generated message class (e.g. sensor_msgs.msg.Image)."""
    package = msg_class.__module__.split(".")[0]
    return f"{package}/msg/{msg_class.__name__}"


@dataclass
class RecorderStats:
    received: dict[str, int]                # topic -> messages taken from DDS
    written: dict[str, int]                 # topic -> messages in the bag
    queue_depth: int                        # messages waiting for the writer thread
    max_queue_depth: int
    queued_bytes: int
    max_queued_bytes: int
    errors: list[str] = field(default_factory=list)

    @property
    def total_received(self) -> int:
        return sum(self.received.values())

    @property
    def total_written(self) -> int:
        return sum(self.written.values())


class BagRecorder(Node):
    """Records `topics` ({topic: message class}) into a new bag at `output`.

    Args:
        storage: "mcap" (default) or "sqlite3".
        warn_queue_bytes: write-behind queue size (bytes) above which diagnostics say WARN.
        diagnostics_hz: rate of the recorder's own status on /diagnostics (None = not published).
    """

    def __init__(self, output: str | Path, topics: Mapping[str, type], *, storage: str = "mcap",
                 qos: QoSProfile = RECORDER_QOS, use_sim_time: bool = False,
                 warn_queue_bytes: int = 256 * 1024 * 1024, diagnostics_hz: float | None = None,
                 record_tf: bool = False, context=None, name: str = "vla3d_recorder") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        if not topics:
            raise ValueError("nothing to record: topics is empty")
        output = Path(output)
        if output.exists():
            raise FileExistsError(f"output bag {output} exists already; not overwriting")
        super().__init__(name, context=context, parameter_overrides=node_parameters(use_sim_time))
        self.output = output
        self.warn_queue_bytes = warn_queue_bytes
        store = output_typestore()
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(output, version=9, storage_plugin=plugin)
        self._writer.open()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._received = {topic: 0 for topic in topics}
        self._written = {topic: 0 for topic in topics}
        self._depth = self._max_depth = self._bytes = self._max_bytes = 0
        self._errors: list[str] = []
        self._closed = False
        for topic, msg_class in topics.items():
            connection = self._writer.add_connection(topic, ros_type_name(msg_class), typestore=store)
            self.create_subscription(msg_class, topic, self._callback(topic, connection), qos, raw=True)
        self._tf_connections = {}
        if record_tf:
            from vla3d_ros.data.bags import TF_MESSAGE, TF_STATIC_TOPIC, TF_TOPIC, latched_qos

            for topic in (TF_TOPIC, TF_STATIC_TOPIC):
                self._tf_connections[topic] = self._writer.add_connection(
                    topic, TF_MESSAGE, typestore=store, offered_qos_profiles=latched_qos(topic == TF_STATIC_TOPIC))
                self._received[topic] = self._written[topic] = 0
            self._static_written: dict[tuple[str, str], np.ndarray] = {}
        self._thread = threading.Thread(target=self._write_loop, name=f"{name}_writer", daemon=True)
        self._thread.start()
        self._diagnostics = None
        if diagnostics_hz:
            self._diagnostics = DiagnosticsPublisher(self)
            self.create_timer(1.0 / diagnostics_hz, lambda: self._diagnostics.publish(self.statuses()))

    # ---- receiving (executor threads): enqueue only ----------------------------------------------

    def _callback(self, topic: str, connection):
        clock = self.get_clock()

        def enqueue(data: bytes) -> None:
            stamp_ns = clock.now().nanoseconds
            with self._lock:
                if self._closed:
                    return
                self._received[topic] += 1
                self._depth += 1
                self._bytes += len(data)
                self._max_depth = max(self._max_depth, self._depth)
                self._max_bytes = max(self._max_bytes, self._bytes)
                # Under the lock: nothing can be queued behind close()'s stop marker.
                self._queue.put((topic, connection, stamp_ns, data))
        return enqueue

    def record_transform(self, parent: str, child: str, T_parent_child: np.ndarray, stamp: float | None,
                         static: bool) -> None:
        """Queue T_parent_child as a TFMessage: on /tf_static when `static` (only if it changed since
        the last one of that edge), else on /tf; stamp None = the node's clock."""
        from vla3d_ros.data.bags import TF_MESSAGE, TF_STATIC_TOPIC, TF_TOPIC, transform_message, typestore

        if not self._tf_connections:
            raise RuntimeError("record_transform needs BagRecorder(record_tf=True)")
        clock_ns = self.get_clock().now().nanoseconds
        stamp_ns = clock_ns if stamp is None else int(round(stamp * 1e9))
        with self._lock:
            if static:
                previous = self._static_written.get((parent, child))
                if previous is not None and np.array_equal(previous, T_parent_child):
                    return
                self._static_written[(parent, child)] = np.array(T_parent_child)
        store = typestore()
        data = store.serialize_cdr(store.types[TF_MESSAGE](
            transforms=[transform_message(T_parent_child, stamp_ns, parent, child)]), TF_MESSAGE)
        topic = TF_STATIC_TOPIC if static else TF_TOPIC
        self._callback(topic, self._tf_connections[topic])(data)

    # ---- writing (one thread) ---------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            topic, connection, stamp_ns, data = item
            try:
                self._writer.write(connection, stamp_ns, data)
                error = None
            except Exception as exc:  # noqa: BLE001 - a full disk must be reported, not kill the thread
                error = f"{topic}: write failed: {type(exc).__name__}: {exc}"
            with self._lock:
                self._depth -= 1
                self._bytes -= len(data)
                if error is None:
                    self._written[topic] += 1
                elif len(self._errors) < 100:
                    self._errors.append(error)
            if error is not None:
                self.get_logger().error(error, throttle_duration_sec=5.0)

    # ---- public -----------------------------------------------------------------------------------

    def stats(self) -> RecorderStats:
        with self._lock:
            return RecorderStats(dict(self._received), dict(self._written), self._depth, self._max_depth,
                                 self._bytes, self._max_bytes, list(self._errors))

    def statuses(self) -> list[Status]:
        stats = self.stats()
        values = {"received": str(stats.total_received), "written": str(stats.total_written),
                  "queue_depth": str(stats.queue_depth), "max_queue_depth": str(stats.max_queue_depth),
                  "queued_bytes": str(stats.queued_bytes), "bag": str(self.output)}
        if stats.errors:
            return [Status("recorder", Level.ERROR, stats.errors[-1], values)]
        if stats.queued_bytes > self.warn_queue_bytes:
            return [Status("recorder", Level.WARN, f"write-behind queue holds {stats.queued_bytes / 2**20:.0f} MiB "
                                                   "(the disk is slower than the input)", values)]
        return [Status("recorder", Level.OK, f"{stats.total_written} messages written", values)]

    def close(self, timeout: float | None = None) -> RecorderStats:
        """Stop recording, write everything still queued, close the bag; returns the final stats.

        Idempotent. `timeout` bounds the wait for the writer thread (None = until done).
        """
        with self._lock:
            already = self._closed
            self._closed = True
        if not already:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"recorder writer still busy after {timeout} s ({self.stats().queue_depth} queued)")
            self._writer.close()
        return self.stats()

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()


class TransformTee:
    """A `TransformSink` that passes transforms on to `sink` and records them with `recorder`.

    Frames in `static_children` go to /tf_static (a fixed camera), the others to /tf.
    """

    def __init__(self, sink, recorder: BagRecorder, static_children=()) -> None:
        self.sink = sink
        self.recorder = recorder
        self.static_children = frozenset(static_children)

    def set_transform(self, parent: str, child: str, T_parent_child: np.ndarray, stamp: float | None) -> None:
        self.sink.set_transform(parent, child, T_parent_child, stamp)
        self.recorder.record_transform(parent, child, T_parent_child, stamp,
                                       static=stamp is None or child in self.static_children)


def count_bag_messages(path: str | Path) -> dict[str, int]:
    """Messages per topic in a bag written by `BagRecorder` (read back from the file)."""
    from rosbags.rosbag2 import Reader

    counts: dict[str, int] = {}
    with Reader(path) as reader:
        for connection, _, _ in reader.messages():
            counts[connection.topic] = counts.get(connection.topic, 0) + 1
    return counts
