"""Where the graph gets rigid transforms (camera extrinsics, the end-effector pose).

`vla3d_ros.runtime.calibration.TransformSource` is the interface. Two implementations:
- `Tf2TransformSource`: a tf2_ros buffer + listener on /tf and /tf_static (a full ROS install);
  `Tf2TransformPublisher` broadcasts with tf2_ros.
- `TransformCache`: used when tf2_ros (and tf2_msgs) are not installed, as on a pip-only machine.
  Producers in the same process (the sim bridge, the bag replayer) write transforms into it
  synchronously before they publish the images stamped with the same time, so the consumer
  always finds the pose of the exact stamp: no race between /tf and the image topics. Without
  tf2_ros the graph therefore runs in one process (`vla3d bringup`), which is what `graph.py` does.

`make_transform_io(node, cache)` picks one; both sides get the same matrices.
"""
from __future__ import annotations

import bisect
import math
import threading
from collections import deque

import numpy as np

from vla3d_ros.geometry import invert_transform
from vla3d_ros.ros.conversions import matrix_to_transform_msg, transform_msg_to_matrix
from vla3d_ros.runtime.calibration import validate_rigid_transform

try:  # a full ROS 2 install
    import tf2_ros
    HAVE_TF2 = True
except ImportError:  # pip-only: tf2_ros / tf2_msgs are not on any registry
    HAVE_TF2 = False

# Stamps closer than this are the same instant (float seconds vs integer nanoseconds).
_STAMP_EPS = 1e-6


# A dynamic transform this much older than the stamp asked for is no longer the frame's pose.
MAX_DYNAMIC_AGE = 0.1

# A transform this much older than the newest of its edge means the clock jumped back (a bag
# looped, the simulation reset): a new timeline, the old history is dropped. Anything less is a
# late message (a reordered burst, a slow executor) and is filed in time order, as tf2 does.
TIMELINE_RESET_JUMP = 1.0


class TransformCache:
    """Latest transforms per (parent, child) edge with a bounded history, thread-safe.

    Lookups resolve one edge, in either direction: T_target_source for the edge target -> source
    (or its inverse). At a stamp, the newest transform not after it is returned if it is at most
    `max_dynamic_age` seconds older (a moving camera whose TF stopped has no pose: tf2 refuses to
    extrapolate too); static ones hold at every stamp.
    """

    def __init__(self, history: int = 200, max_dynamic_age: float = MAX_DYNAMIC_AGE,
                 timeline_reset_jump: float = TIMELINE_RESET_JUMP) -> None:
        if not max_dynamic_age >= 0:
            raise ValueError(f"max_dynamic_age must be >= 0 s, got {max_dynamic_age}")
        if not timeline_reset_jump > 0:
            raise ValueError(f"timeline_reset_jump must be > 0 s, got {timeline_reset_jump}")
        self._history = history
        self.max_dynamic_age = max_dynamic_age
        self.timeline_reset_jump = timeline_reset_jump
        self._edges: dict[tuple[str, str], deque[tuple[float, np.ndarray]]] = {}
        self._lock = threading.Lock()

    def set_transform(self, parent: str, child: str, T_parent_child: np.ndarray, stamp: float | None) -> None:
        """Store T_parent_child at `stamp` (None = static, valid at all times)."""
        T = validate_rigid_transform(T_parent_child, f"transform {parent} <- {child}")
        key = (parent, child)
        with self._lock:
            entries = self._edges.setdefault(key, deque(maxlen=self._history))
            when = -math.inf if stamp is None else float(stamp)
            if entries and when < entries[-1][0] - self.timeline_reset_jump:
                entries.clear()
            if not entries or when >= entries[-1][0]:
                entries.append((when, T))
                return
            index = bisect.bisect_right([stamp_ for stamp_, _ in entries], when)
            if len(entries) == entries.maxlen:
                if index == 0:
                    return  # older than the whole bounded history: nobody can ask for it
                entries.popleft()
                index -= 1
            entries.insert(index, (when, T))

    def clear(self) -> None:
        with self._lock:
            self._edges.clear()

    def _at(self, key: tuple[str, str], stamp: float | None) -> tuple[np.ndarray | None, float | None]:
        """(the transform of edge `key` valid at `stamp` or None, the stamp of the newest one not
        after `stamp` when that one is too old)."""
        entries = self._edges.get(key)
        if not entries:
            return None, None
        if stamp is None:
            return entries[-1][1], None
        times = [when for when, _ in entries]
        index = bisect.bisect_right(times, stamp + _STAMP_EPS) - 1
        if index < 0:
            return None, None
        when, T = entries[index]
        if when != -math.inf and stamp - when > self.max_dynamic_age + _STAMP_EPS:
            return None, when
        return T, None

    def lookup_transform(self, target_frame: str, source_frame: str, stamp: float | None) -> np.ndarray:
        """(4, 4) T_target_source; LookupError naming the frames if it is unknown at `stamp`."""
        if target_frame == source_frame:
            return np.eye(4)
        with self._lock:
            T, stale = self._at((target_frame, source_frame), stamp)
            if T is not None:
                return T.copy()
            T_inverse, stale_inverse = self._at((source_frame, target_frame), stamp)
            if T_inverse is not None:
                return invert_transform(T_inverse)
            known = sorted(self._edges)
        when = "latest" if stamp is None else f"t={stamp:.3f}"
        newest = stale if stale is not None else stale_inverse
        if newest is not None:
            raise LookupError(f"transform {target_frame} <- {source_frame} at {when} is stale: the newest is "
                              f"{stamp - newest:.3f} s older (limit {self.max_dynamic_age} s)")
        raise LookupError(f"no transform {target_frame} <- {source_frame} at {when} (known edges: {known})")


if HAVE_TF2:
    class Tf2TransformSource:
        """TransformSource over a tf2_ros buffer fed by /tf and /tf_static."""

        def __init__(self, node) -> None:
            self.buffer = tf2_ros.Buffer(node=node)
            self.listener = tf2_ros.TransformListener(self.buffer, node, spin_thread=False)

        def lookup_transform(self, target_frame: str, source_frame: str, stamp: float | None) -> np.ndarray:
            from rclpy.time import Time
            when = Time() if stamp is None else Time(nanoseconds=int(round(stamp * 1e9)))
            try:
                msg = self.buffer.lookup_transform(target_frame, source_frame, when)
            except tf2_ros.TransformException as error:
                raise LookupError(str(error)) from None
            return transform_msg_to_matrix(msg)

    class Tf2TransformPublisher:
        """Broadcasts transforms on /tf (dynamic) and /tf_static."""

        def __init__(self, node) -> None:
            self.node = node
            self.dynamic = tf2_ros.TransformBroadcaster(node)
            self.static = tf2_ros.StaticTransformBroadcaster(node)

        def set_transform(self, parent: str, child: str, T_parent_child: np.ndarray, stamp: float | None) -> None:
            msg = matrix_to_transform_msg(T_parent_child, parent, child, 0.0 if stamp is None else stamp)
            (self.static if stamp is None else self.dynamic).sendTransform(msg)


def make_transform_source(node, cache: TransformCache | None):
    """tf2 when installed, else the in-process cache (which must then be given)."""
    if HAVE_TF2:
        return Tf2TransformSource(node)
    if cache is None:
        raise RuntimeError("tf2_ros is not installed: the graph must run in one process and share a "
                           "TransformCache (vla3d bringup does this)")
    return cache


def make_transform_publisher(node, cache: TransformCache | None):
    """tf2 broadcaster when installed, else the in-process cache (which must then be given)."""
    if HAVE_TF2:
        return Tf2TransformPublisher(node)
    if cache is None:
        raise RuntimeError("tf2_ros is not installed: the graph must run in one process and share a "
                           "TransformCache (vla3d bringup does this)")
    return cache
