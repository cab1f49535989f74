"""Any robot's ROS 2 bag (MCAP or sqlite3, as `ros2 bag record` writes it) -> training episodes.

`vla3d convert BAG... OUT --config robot.yaml` (rosbags, no rclpy). The runtime YAML names what to
read: per camera its colour (Image rgb8 / bgr8 / rgba8 / bgra8 / mono8, or CompressedImage JPEG /
PNG), CameraInfo and depth (16UC1 mm or 32FC1 m) topics and optical frame; `base_frame`,
`ee_frame`, `joint_state_topic`, `instruction_topic`, the output adapter's command topics; and its
`convert:` section (step period, where actions, gripper and episode boundaries come from). Topics
the config does not name are ignored.

Two passes over the bag, so memory holds one step's images, not the bag:
1. everything but image payloads: header stamps of the camera streams (read from the CDR bytes),
   CameraInfo, /tf + /tf_static, joint states, gripper, commands, instruction, episode markers.
   The camera streams go through the live graph's approximate-time synchroniser
   (`runtime.synchronizer.CameraSetAssembler`, in arrival order) and the synchronised sets are
   resampled at the step period: the set nearest each grid time t0 + k * period (within half a
   period), so cameras at different rates and jittered stamps give one step per period. The
   step's stamp is the grid time (joint state, EE pose, gripper and actions are taken there, so
   every action spans exactly one period); the camera poses are taken at the set's stamp.
2. the images of the chosen sets only, decoded by `runtime.images` (the live nodes' decoder).

Per step: K from that set's CameraInfo (distortion coefficients used as published: images are
not rectified, that is the driver's job; reported once), T_base_cam from the YAML extrinsics or
TF base <- optical frame at the set's stamp (chains of /tf and /tf_static, interpolated, leading
'/' stripped as tf2 does), the joint state nearest in stamp, the EE pose from TF base <- ee_frame,
the gripper opening (a Float64 topic, or a joint mapped from its (closed, open) range).
Actions (`convert.actions`): "ee_pose" = (p[t+1] - p[t], euler_xyz(R[t+1] R[t]^T), gripper
target), exactly how the simulator's (dx, dy, dz, droll, dpitch, dyaw) act on the pose; or
"command" = the servo TwistStamped integrated over the step (each twist held until the next, at
most `watchdog.command_timeout`, like MoveIt Servo) or the last ros2_control JointTrajectory
target stamped before the next step. With "ee_pose" the last step of an episode holds (zero
delta); with "command" it takes the commands recorded during the period after it.

Messages without a header (Float64, String) carry only the bag's log time: each takes the header
stamp of the sensor message (camera, joint state; for gripper commands the output adapter's
command) nearest in log time, so bags logged on wall time with sim-time stamps (the demo's) line
up. Every refusal is one line naming bag, topic and field (`BagImportError`).
"""
from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vla3d_ros.data.bags import (
    CAMERA_INFO, COMPRESSED_IMAGE, IMAGE, META_TOPIC, TF_STATIC_TOPIC, TF_TOPIC, decode_color_message,
    transform_matrix, typestore,
)
from vla3d_ros.geometry import (
    invert_transform, matrix_to_euler_xyz, matrix_to_quaternion_xyzw,
    quaternion_xyzw_to_matrix,
)
from vla3d_ros.runtime.calibration import CameraCalibration
from vla3d_ros.runtime.config import RuntimeConfig
from vla3d_ros.runtime.images import decode_compressed_image, decode_depth_image
from vla3d_ros.runtime.synchronizer import CameraSetAssembler
from vla3d_ros.types import EE_DELTA_ACTION_NAMES, Observation

# A dynamic transform may be held this long past its newest sample (tf2 refuses to extrapolate;
# TransformCache holds 0.1 s, the same limit).
MAX_TF_EXTRAPOLATION = 0.1
_NS = 1_000_000_000
# Joint states searched (nearest first) for one naming the wanted joints: publishers sharing the
# topic (arm, gripper) interleave, so one of the nearest few names them.
JOINT_STATE_CANDIDATES = 50


class BagImportError(ValueError):
    """A bag that cannot become episodes; the message is one line naming bag, topic and field."""


def strip_frame(frame_id: str) -> str:
    """tf2's frame id normalisation: no leading '/'."""
    return frame_id.lstrip("/")


# ---- transforms ----------------------------------------------------------------------------------

class TransformTree:
    """/tf + /tf_static of a whole bag: chains composed, dynamic edges interpolated in time.

    `lookup(target, source, t)` -> (4, 4) T_target_source; LookupError naming the frames.
    """

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._static: dict[str, np.ndarray] = {}
        self._dynamic: dict[str, tuple[list[float], list[np.ndarray]]] = {}

    def add(self, parent: str, child: str, T: np.ndarray, stamp: float | None) -> None:
        parent, child = strip_frame(parent), strip_frame(child)
        self._parent[child] = parent
        if stamp is None:
            self._static[child] = T
            return
        times, values = self._dynamic.setdefault(child, ([], []))
        index = bisect.bisect_right(times, stamp)
        times.insert(index, stamp)
        values.insert(index, T)

    @property
    def frames(self) -> set[str]:
        return set(self._parent) | set(self._parent.values())

    def _edge(self, child: str, stamp: float) -> np.ndarray:
        if child in self._static:
            return self._static[child]
        times, values = self._dynamic[child]
        index = bisect.bisect_right(times, stamp)
        if index == 0:
            if times[0] - stamp <= 1e-9:
                return values[0]
            raise LookupError(f"transform {self._parent[child]} <- {child} starts at {times[0]:.3f} s, "
                              f"after {stamp:.3f} s")
        if index == len(times):
            if stamp - times[-1] > MAX_TF_EXTRAPOLATION:
                raise LookupError(f"transform {self._parent[child]} <- {child} ends at {times[-1]:.3f} s, "
                                  f"{stamp - times[-1]:.3f} s before {stamp:.3f} s")
            return values[-1]
        t0, t1 = times[index - 1], times[index]
        if t1 - t0 < 1e-9:
            return values[index]
        return _interpolate(values[index - 1], values[index], (stamp - t0) / (t1 - t0))

    def _to_root(self, frame: str, stamp: float) -> tuple[str, np.ndarray]:
        T = np.eye(4)
        seen = {frame}
        while frame in self._parent:
            T = self._edge(frame, stamp) @ T
            frame = self._parent[frame]
            if frame in seen:
                raise LookupError(f"TF has a cycle through {frame!r}")
            seen.add(frame)
        return frame, T

    def lookup(self, target: str, source: str, stamp: float) -> np.ndarray:
        target, source = strip_frame(target), strip_frame(source)
        for frame in (target, source):
            if frame not in self.frames:
                raise LookupError(f"no TF for frame {frame!r} (frames in /tf and /tf_static: "
                                  f"{sorted(self.frames)[:12]})")
        root_target, T_root_target = self._to_root(target, stamp)
        root_source, T_root_source = self._to_root(source, stamp)
        if root_target != root_source:
            raise LookupError(f"frames {target!r} and {source!r} are in different TF trees "
                              f"(roots {root_target!r}, {root_source!r})")
        return invert_transform(T_root_target) @ T_root_source


def _interpolate(T0: np.ndarray, T1: np.ndarray, weight: float) -> np.ndarray:
    """Linear in translation, slerp in rotation (tf2's interpolation)."""
    q0, q1 = matrix_to_quaternion_xyzw(T0[:3, :3]), matrix_to_quaternion_xyzw(T1[:3, :3])
    if np.dot(q0, q1) < 0:
        q1 = -q1
    angle = float(np.arccos(np.clip(np.dot(q0, q1), -1.0, 1.0)))
    if angle < 1e-9:
        q = q0
    else:
        q = (np.sin((1 - weight) * angle) * q0 + np.sin(weight * angle) * q1) / np.sin(angle)
    T = np.eye(4)
    T[:3, :3] = quaternion_xyzw_to_matrix(q)
    T[:3, 3] = (1 - weight) * T0[:3, 3] + weight * T1[:3, 3]
    return T


def pose_of(T: np.ndarray) -> np.ndarray:
    """(4, 4) -> (7,) x, y, z, qx, qy, qz, qw."""
    return np.concatenate([T[:3, 3], matrix_to_quaternion_xyzw(T[:3, :3])])


# ---- actions -------------------------------------------------------------------------------------

def ee_delta_action(T_now: np.ndarray, T_next: np.ndarray, gripper_target: float) -> np.ndarray:
    """(7,) float32 (dx, dy, dz, droll, dpitch, dyaw, gripper) taking pose T_now to T_next in the
    base frame: the simulator applies p* = p + d, R* = R_delta @ R (`sim.controller`)."""
    delta = T_next[:3, 3] - T_now[:3, 3]
    rotation = matrix_to_euler_xyz(T_next[:3, :3] @ T_now[:3, :3].T)
    return np.concatenate([delta, rotation, [gripper_target]]).astype(np.float32)


def integrate_twists(stamps: np.ndarray, linear: np.ndarray, angular: np.ndarray, start: float, end: float,
                     hold: float) -> tuple[np.ndarray, np.ndarray]:
    """(translation (3,), rotation (3, 3)) of twists (T,) / (T, 3) / (T, 3) in the base frame over
    [start, end): each twist acts from its stamp until the next one, at most `hold` seconds."""
    from scipy.spatial.transform import Rotation

    translation, rotation = np.zeros(3), np.eye(3)
    first = max(bisect.bisect_right(stamps, start) - 1, 0)
    for i in range(first, len(stamps)):
        if stamps[i] >= end:
            break
        until = min(stamps[i + 1] if i + 1 < len(stamps) else np.inf, stamps[i] + hold, end)
        duration = until - max(stamps[i], start)
        if duration <= 0:
            continue
        translation = translation + linear[i] * duration
        rotation = Rotation.from_rotvec(angular[i] * duration).as_matrix() @ rotation
    return translation, rotation


# ---- the bag's contents (pass 1) -----------------------------------------------------------------

def _log_to_header_time(logs: np.ndarray, reference_logs: np.ndarray, reference_stamps: np.ndarray) -> list[float]:
    """Header-clock seconds of messages logged at `logs` (ns): the header stamp of the reference
    message nearest in log time. Local, not one global offset: a lockstep simulation logged on
    wall time advances its stamps at a varying wall rate; and a message published in the same
    burst as a sensor message (the gripper opening with the joint state it belongs to) takes
    exactly that message's stamp."""
    if not len(reference_logs):
        return (logs / _NS).tolist()
    right = np.clip(np.searchsorted(reference_logs, logs), 0, len(reference_logs) - 1)
    left = np.maximum(right - 1, 0)
    nearer_left = np.abs(logs - reference_logs[left]) <= np.abs(reference_logs[right] - logs)
    return reference_stamps[np.where(nearer_left, left, right)].tolist()


def _header_stamp_ns(raw: bytes) -> int:
    """header.stamp of a CDR message starting with std_msgs/Header, without deserialising it."""
    if len(raw) < 12:
        raise ValueError(f"message of {len(raw)} bytes is too short for a header")
    order = "<" if raw[1] == 1 else ">"
    sec, nanosec = struct.unpack(order + "iI", bytes(raw[4:12]))
    return sec * _NS + nanosec


@dataclass
class Stream:
    """One topic's messages: header (or mapped log) stamps in seconds, and what pass 1 kept."""

    topic: str
    stamps: list[float] = field(default_factory=list)
    log_ns: list[int] = field(default_factory=list)
    messages: list = field(default_factory=list)

    def latest_before(self, stamp: float, inclusive: bool = True) -> int | None:
        """Index of the newest message stamped at (`inclusive`) or before `stamp`; None if none."""
        if inclusive:
            index = bisect.bisect_right(self.stamps, stamp + 1e-9) - 1
        else:
            index = bisect.bisect_left(self.stamps, stamp - 1e-9) - 1
        return index if index >= 0 else None

    def nearest(self, stamp: float) -> int | None:
        candidates = self.nearest_first(stamp, 1)
        return candidates[0] if candidates else None

    def nearest_first(self, stamp: float, count: int) -> list[int]:
        """Indices of the (up to) `count` messages stamped nearest `stamp`, nearest first."""
        index = bisect.bisect_left(self.stamps, stamp)
        window = range(max(index - count, 0), min(index + count, len(self.stamps)))
        return sorted(window, key=lambda i: abs(self.stamps[i] - stamp))[:count]


@dataclass
class PlannedStep:
    stamp: float                          # the step's grid time: proprioception and actions
    set_stamp: float                      # its camera set's stamp: images and camera poses
    frames: dict[str, dict[str, int]]     # camera -> stream -> message index in its topic


@dataclass
class ImportedEpisode:
    """One episode of a bag after pass 1: its steps, and everything about them but the images."""

    meta: dict
    camera_names: tuple[str, ...]
    plan: list[PlannedStep]
    instruction: str
    poses: list[np.ndarray]               # (4, 4) T_base_ee per step
    openings: list[float]                 # gripper opening per step
    actions: np.ndarray                   # (T, A) float32


class RobotBag:
    """A robot's bag read through a runtime config (see the module docstring).

    `episodes()` runs pass 1 (no image decoded); `steps(episodes)` runs pass 2.
    """

    def __init__(self, path: Path | str, config: RuntimeConfig, *, instruction: str | None = None,
                 step_period: float | None = None, progress: bool = False) -> None:
        self.path = Path(path)
        self.config = config
        self.instruction_override = instruction
        settings = config.convert
        self.step_period = step_period or settings.step_period or 1.0 / config.rates.control_hz
        self.progress = progress
        self.notes: list[str] = []
        self._reader = None
        self._open()

    # ---- errors and reading -----------------------------------------------------------------

    def fail(self, what: str) -> BagImportError:
        return BagImportError(f"{self.path}: {what}")

    def _open(self) -> None:
        from rosbags.rosbag2 import Reader

        if not self.path.exists():
            raise self.fail("does not exist")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as error:  # noqa: BLE001 - rosbags raises its own errors, sqlite3 / mcap / OS ones
            raise self.fail(f"cannot open bag (truncated or corrupt?): {type(error).__name__}: "
                            f"{_first_line(error)}") from None
        self.connections = {}
        for connection in self._reader.connections:
            self.connections.setdefault(connection.topic, []).append(connection)

    def close(self) -> None:
        if self._reader is not None and self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> RobotBag:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _messages(self, topics: Sequence[str]) -> Iterator[tuple[str, int, bytes]]:
        connections = [c for topic in topics for c in self.connections.get(topic, [])]
        try:
            for connection, log_ns, raw in self._reader.messages(connections=connections):
                yield connection.topic, log_ns, raw
        except Exception as error:  # noqa: BLE001 - a truncated file fails inside rosbags' iterator
            raise self.fail(f"cannot read messages (truncated or corrupt bag?): {type(error).__name__}: "
                            f"{_first_line(error)}") from None

    def _msgtype(self, topic: str) -> str:
        return self.connections[topic][0].msgtype

    def _require_topic(self, topic: str, key: str, types: Sequence[str] | None = None) -> None:
        if topic not in self.connections:
            known = sorted(self.connections)
            raise self.fail(f"topic {topic} ({key} in the config) is not in the bag; it has "
                            f"{known[:15]}{' ...' if len(known) > 15 else ''}")
        if types is not None and self._msgtype(topic) not in types:
            raise self.fail(f"topic {topic} ({key}) has type {self._msgtype(topic)}, expected one of {list(types)}")

    def _deserialize(self, topic: str, raw: bytes):
        try:
            return typestore().deserialize_cdr(raw, self._msgtype(topic))
        except Exception as error:  # noqa: BLE001 - a malformed CDR payload
            raise self.fail(f"topic {topic}: cannot deserialise {self._msgtype(topic)}: "
                            f"{_first_line(error)}") from None

    # ---- pass 1 ------------------------------------------------------------------------------

    def _camera_topics(self) -> dict[tuple[str, str], str]:
        topics = {}
        for index, camera in enumerate(self.config.cameras):
            topics[(camera.name, "color")] = camera.topics.color
            topics[(camera.name, "camera_info")] = camera.topics.camera_info
            if camera.topics.depth:
                topics[(camera.name, "depth")] = camera.topics.depth
        return topics

    def plan(self) -> list[list[PlannedStep]]:
        """Pass 1: the steps of every episode (no image decoded)."""
        config, settings = self.config, self.config.convert
        camera_topics = self._camera_topics()
        for index, camera in enumerate(config.cameras):
            self._require_topic(camera.topics.color, f"cameras[{index}].topics.color", (IMAGE, COMPRESSED_IMAGE))
            self._require_topic(camera.topics.camera_info, f"cameras[{index}].topics.camera_info", (CAMERA_INFO,))
            if camera.topics.depth:
                self._require_topic(camera.topics.depth, f"cameras[{index}].topics.depth", (IMAGE,))
        self._require_topic(config.joint_state_topic, "joint_state_topic", ("sensor_msgs/msg/JointState",))
        uses_tf = bool(config.ee_frame) or any(camera.extrinsics is None for camera in config.cameras)
        if not config.ee_frame:
            raise self.fail("the config has no ee_frame: the end-effector pose (and EE-delta actions) come "
                            f"from TF {config.base_frame} <- ee_frame")
        if uses_tf and TF_TOPIC not in self.connections and TF_STATIC_TOPIC not in self.connections:
            raise self.fail(f"topic /tf is not in the bag: needed for ee_frame {config.ee_frame!r}"
                            " (and cameras without extrinsics)")
        if settings.gripper_joint is None:
            self._require_topic(settings.gripper_topic or "", "convert.gripper_topic (or set convert.gripper_joint)",
                                ("std_msgs/msg/Float64",))
        # The output adapter's recorded commands: the actions in "command" mode, the time
        # reference of the gripper commands, and what replay compares the policy with.
        servo = config.output.adapter == "servo"
        command_topic = config.output.servo.topic if servo else config.output.ros2_control.topic
        if settings.actions == "command" or command_topic in self.connections:
            self._require_topic(command_topic, f"output.{'servo' if servo else 'ros2_control'}.topic",
                                ("geometry_msgs/msg/TwistStamped",) if servo else ("trajectory_msgs/msg/JointTrajectory",))
        else:
            command_topic = None
        if settings.gripper_target == "command":
            self._require_topic(config.output.gripper_topic or "", "output.gripper_topic", ("std_msgs/msg/Float64",))
        self.command_topic = command_topic

        headerless = [topic for topic in (settings.gripper_topic if settings.gripper_joint is None else None,
                                          config.output.gripper_topic if settings.gripper_target == "command" else None,
                                          config.instruction_topic, settings.episode_topic)
                      if topic and topic in self.connections]
        kept = [config.joint_state_topic, TF_TOPIC, TF_STATIC_TOPIC, *headerless,
                *([command_topic] if command_topic else [])]
        kept += [camera.topics.camera_info for camera in config.cameras]
        image_topics = [camera.topics.color for camera in config.cameras] + [
            camera.topics.depth for camera in config.cameras if camera.topics.depth]
        streams: dict[str, Stream] = {topic: Stream(topic) for topic in set(kept + image_topics)}
        self.tree = TransformTree()
        arrivals: list[tuple[int, str, float]] = []     # (log ns, topic, header stamp s) of camera streams
        for topic, log_ns, raw in self._messages(sorted(set(kept + image_topics) & set(self.connections))):
            stream = streams[topic]
            if topic in (TF_TOPIC, TF_STATIC_TOPIC):
                self._add_tf(topic, self._deserialize(topic, raw))
                continue
            if topic in headerless:
                stream.log_ns.append(log_ns)
                stream.messages.append(self._deserialize(topic, raw))
                continue
            try:
                stamp = _header_stamp_ns(raw) / _NS
            except ValueError as error:
                raise self.fail(f"topic {topic}: field header: {error}") from None
            if topic in image_topics:
                stream.log_ns.append(log_ns)
                stream.stamps.append(stamp)
                arrivals.append((log_ns, topic, stamp))
                continue
            message = self._deserialize(topic, raw)
            if topic == config.joint_state_topic:
                message = (tuple(message.name), np.asarray(message.position, np.float64))
            elif topic == command_topic and config.output.adapter == "servo":
                twist = message.twist
                message = (np.array([twist.linear.x, twist.linear.y, twist.linear.z]),
                           np.array([twist.angular.x, twist.angular.y, twist.angular.z]))
            stream.log_ns.append(log_ns)
            stream.stamps.append(stamp if stamp > 0 else log_ns / _NS)
            stream.messages.append(message)
        self.streams = streams
        for topic in [config.joint_state_topic] + [c.topics.color for c in config.cameras]:
            if not streams[topic].log_ns:
                raise self.fail(f"topic {topic} has no messages")
        # Header-less messages: log time mapped onto the header clock (module docstring).
        joints = streams[config.joint_state_topic]
        sensors = sorted(arrivals + [(log, "", stamp) for log, stamp in zip(joints.log_ns, joints.stamps)])
        sensors = (np.array([log for log, _, _ in sensors], np.int64), np.array([stamp for _, _, stamp in sensors]))
        for topic in headerless:
            reference = sensors
            if topic == config.output.gripper_topic and command_topic and streams[command_topic].log_ns:
                reference = (np.array(streams[command_topic].log_ns, np.int64), np.array(streams[command_topic].stamps))
            streams[topic].stamps = _log_to_header_time(np.array(streams[topic].log_ns, np.int64), *reference)
        for stream in streams.values():
            self._sort(stream)
        sets = self._synchronise(camera_topics, sorted(arrivals))
        self.camera_rates, self.unmatched = {}, {}
        for camera in config.cameras:
            stamps = streams[camera.topics.color].stamps
            span = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
            self.camera_rates[camera.name] = (len(stamps) - 1) / span if span > 0 else 0.0
            self.unmatched[camera.name] = len(stamps) - len(sets)   # a colour image is in one set at most
        self.sets = len(sets)
        if not sets:
            raise self.fail(f"no synchronised camera set (slop {config.sync.slop} s) across "
                            f"{sorted(set(camera_topics.values()))}")
        return self._episodes(self._resample(sets))

    @staticmethod
    def _sort(stream: Stream) -> None:
        if stream.stamps and any(b < a for a, b in zip(stream.stamps, stream.stamps[1:])):
            order = sorted(range(len(stream.stamps)), key=stream.stamps.__getitem__)
            stream.stamps = [stream.stamps[i] for i in order]
            stream.log_ns = [stream.log_ns[i] for i in order]
            stream.messages = [stream.messages[i] for i in order] if stream.messages else []

    def _add_tf(self, topic: str, message) -> None:
        for transform in message.transforms:
            stamp = transform.header.stamp.sec + transform.header.stamp.nanosec / _NS
            try:
                T = transform_matrix(transform.transform)
            except ValueError as error:
                raise self.fail(f"topic {topic}: field transform of {transform.header.frame_id} <- "
                                f"{transform.child_frame_id}: {error}") from None
            self.tree.add(transform.header.frame_id, transform.child_frame_id, T,
                          None if topic == TF_STATIC_TOPIC else stamp)

    def _synchronise(self, camera_topics: dict[tuple[str, str], str], arrivals) -> list:
        """The live graph's camera sets, fed in arrival (log) order; items = message indices."""
        sets = []
        assembler = CameraSetAssembler([(c.name, c.has_depth) for c in self.config.cameras],
                                       self.config.sync.queue_size, self.config.sync.slop, sets.append,
                                       self.config.sync.max_clock_jump_back)
        info_stamps = {camera.name: self.streams[camera.topics.camera_info].stamps for camera in self.config.cameras}
        counters: dict[str, int] = {}
        for _, topic, stamp in arrivals:
            index = counters.get(topic, 0)
            counters[topic] = index + 1
            for (camera, stream), camera_topic in camera_topics.items():
                if camera_topic != topic:
                    continue
                # CameraInfo is paired with its colour image (same driver stamp) so it joins the
                # set without being read twice.
                assembler.add(camera, stream, stamp, (topic, index))
                if stream == "color":
                    info = self.streams[self.config.camera(camera).topics.camera_info].nearest(stamp)
                    if info is not None:
                        assembler.add(camera, "camera_info", info_stamps[camera][info],
                                      (self.config.camera(camera).topics.camera_info, info))
        return sets

    def _resample(self, sets) -> list[PlannedStep]:
        stamps = np.array([s.stamp for s in sets])
        order = np.argsort(stamps, kind="stable")
        stamps = stamps[order]
        sets = [sets[i] for i in order]
        period = self.step_period
        steps, used = [], set()
        grid = np.arange(stamps[0], stamps[-1] + period / 2, period)
        for t in grid:
            index = int(np.argmin(np.abs(stamps - t)))
            if abs(stamps[index] - t) > period / 2 or index in used:
                continue
            used.add(index)
            frames = {camera: {stream: item[1] for stream, item in
                               ((name, getattr(frame, name)) for name in ("color", "camera_info", "depth"))
                               if item is not None}
                      for camera, frame in sets[index].frames.items()}
            steps.append(PlannedStep(float(t), float(stamps[index]), frames))
        return steps

    def _episodes(self, steps: list[PlannedStep]) -> list[list[PlannedStep]]:
        topic = self.config.convert.episode_topic
        if not topic:
            return [steps]
        if topic not in self.connections:
            raise self.fail(f"topic {topic} (convert.episode_topic in the config) is not in the bag")
        bounds = self.streams[topic].stamps
        episodes: list[list[PlannedStep]] = []
        for step in steps:
            episode = bisect.bisect_right(bounds, step.stamp)
            while len(episodes) <= episode:
                episodes.append([])
            episodes[episode].append(step)
        return [episode for episode in episodes if episode]

    # ---- per-step values ------------------------------------------------------------------------

    def _lookup(self, target: str, source: str, stamp: float, key: str) -> np.ndarray:
        try:
            return self.tree.lookup(target, source, stamp)
        except LookupError as error:
            raise self.fail(f"topic /tf: {key}: {error}") from None

    def _joints(self, stamp: float) -> tuple[tuple[str, ...], np.ndarray]:
        stream = self.streams[self.config.joint_state_topic]
        wanted = self.config.joint_names
        names, positions = stream.messages[stream.nearest(stamp)]
        if not wanted:
            return names, positions
        # Several publishers may share the topic (arm, gripper): the nearest message naming them all.
        for index in stream.nearest_first(stamp, JOINT_STATE_CANDIDATES):
            names, positions = stream.messages[index]
            if set(wanted) <= set(names):
                lookup = dict(zip(names, positions))
                return tuple(wanted), np.array([lookup[name] for name in wanted])
        raise self.fail(f"topic {self.config.joint_state_topic}: field name: no message near {stamp:.3f} s "
                        f"names all of joint_names {list(wanted)} (has {list(names)})")

    def _gripper(self, stamp: float) -> float:
        settings = self.config.convert
        if settings.gripper_joint is not None:
            stream = self.streams[self.config.joint_state_topic]
            for index in stream.nearest_first(stamp, JOINT_STATE_CANDIDATES):
                names, positions = stream.messages[index]
                if settings.gripper_joint in names:
                    closed, opened = settings.gripper_joint_range
                    value = (positions[names.index(settings.gripper_joint)] - closed) / (opened - closed)
                    return float(np.clip(value, 0.0, 1.0))
            raise self.fail(f"topic {self.config.joint_state_topic}: field name: convert.gripper_joint "
                            f"{settings.gripper_joint!r} is in no joint state near {stamp:.3f} s")
        stream = self.streams[settings.gripper_topic]
        index = stream.latest_before(stamp)
        index = 0 if index is None else index
        if not stream.messages:
            raise self.fail(f"topic {settings.gripper_topic} has no messages")
        return float(np.clip(stream.messages[index].data, 0.0, 1.0))

    def _instruction(self, start: float) -> str:
        if self.instruction_override:
            return self.instruction_override
        stream = self.streams.get(self.config.instruction_topic)
        if stream is not None and stream.messages:
            index = stream.latest_before(start)
            return stream.messages[0 if index is None else index].data
        if self.config.instruction:
            return self.config.instruction
        raise self.fail(f"no instruction: topic {self.config.instruction_topic} is not in the bag and neither "
                        "the config's instruction nor --instruction is set")

    def _T_base_cam(self, camera, stamp: float) -> np.ndarray:
        if camera.extrinsics is not None:
            return camera.extrinsics.matrix()
        return self._lookup(self.config.base_frame, camera.frame_id, stamp,
                            f"camera {camera.name!r} frame_id {camera.frame_id!r}")

    def _intrinsics(self, camera, index: int) -> CameraCalibration:
        info = self.streams[camera.topics.camera_info].messages[index]
        try:
            calibration = CameraCalibration.from_camera_info(info.k, info.width, info.height, info.d,
                                                             info.distortion_model)
        except ValueError as error:
            raise self.fail(f"topic {camera.topics.camera_info}: field k: {error}") from None
        if np.any(np.asarray(info.d) != 0) and camera.name not in self._distortion_noted:
            self._distortion_noted.add(camera.name)
            self.notes.append(f"camera {camera.name!r}: {info.distortion_model} distortion "
                              f"{np.round(np.asarray(info.d), 4).tolist()} used as published (images are "
                              "not rectified; rectification is the driver's job)")
        return calibration

    def _actions(self, steps: list[PlannedStep], poses: list[np.ndarray], openings: list[float]) -> np.ndarray:
        config, settings = self.config, self.config.convert
        targets = openings[1:] + openings[-1:]
        if settings.gripper_target == "command":
            stream = self.streams[config.output.gripper_topic]
            targets = []
            for k, step in enumerate(steps):
                end = steps[k + 1].stamp if k + 1 < len(steps) else step.stamp + self.step_period
                index = stream.latest_before(end, inclusive=False)
                targets.append(float(stream.messages[index].data) if index is not None else openings[k])
        hold = np.concatenate([np.zeros(6), targets[-1:]]).astype(np.float32)
        if settings.actions == "ee_pose":
            return np.stack([ee_delta_action(poses[k], poses[k + 1], targets[k]) for k in range(len(steps) - 1)]
                            + [hold])
        stream = self.streams[self.command_topic]
        if config.output.adapter == "servo":
            stamps = np.array(stream.stamps)
            linear = np.array([m[0] for m in stream.messages]).reshape(-1, 3)
            angular = np.array([m[1] for m in stream.messages]).reshape(-1, 3)
            actions = []
            for k, step in enumerate(steps):
                # The last step: the commands recorded during the period after it (the bag may end
                # with the robot still moving).
                end = steps[k + 1].stamp if k + 1 < len(steps) else step.stamp + self.step_period
                translation, rotation = integrate_twists(stamps, linear, angular, step.stamp, end,
                                                         config.watchdog.command_timeout)
                actions.append(np.concatenate([translation, matrix_to_euler_xyz(rotation), [targets[k]]]))
            return np.stack(actions).astype(np.float32)
        names = config.output.ros2_control.joint_names
        actions = []
        previous = None
        for k, step in enumerate(steps):
            end = steps[k + 1].stamp if k + 1 < len(steps) else step.stamp
            index = stream.latest_before(end, inclusive=k + 1 == len(steps))
            if index is not None and stream.messages[index].points:
                message = stream.messages[index]
                positions = dict(zip(message.joint_names, message.points[-1].positions))
                missing = [name for name in names if name not in positions]
                if missing:
                    raise self.fail(f"topic {self.command_topic}: field joint_names lacks {missing}")
                previous = np.array([positions[name] for name in names])
            if previous is None:
                joint_names, joints = self._joints(step.stamp)
                lookup = dict(zip(joint_names, joints))
                previous = np.array([lookup.get(name, np.nan) for name in names])
            actions.append(np.concatenate([previous, [targets[k]]]))
        return np.stack(actions).astype(np.float32)

    # ---- pass 2 ----------------------------------------------------------------------------------

    def episodes(self) -> list[ImportedEpisode]:
        """Pass 1 and the per-episode values that need no image: meta, actions, poses, openings."""
        self._distortion_noted: set[str] = set()
        result = []
        for plan in self.plan():
            config = self.config
            poses = [self._lookup(config.base_frame, config.ee_frame, step.stamp, f"ee_frame {config.ee_frame!r}")
                     for step in plan]
            openings = [self._gripper(step.stamp) for step in plan]
            action_names = (list(EE_DELTA_ACTION_NAMES) if config.convert.actions == "ee_pose"
                            or config.output.adapter == "servo"
                            else [*config.output.ros2_control.joint_names, "gripper"])
            meta = {"task": config.convert.task, "step_period": self.step_period, "action_names": action_names,
                    "source_bag": str(self.path), "action_source": config.convert.actions, "success": True,
                    "camera_topics": {c.name: c.topics.color for c in config.cameras}}
            result.append(ImportedEpisode(meta, config.camera_names, plan, self._instruction(plan[0].stamp),
                                          poses, openings, self._actions(plan, poses, openings)))
        return result

    def steps(self, episodes: list[ImportedEpisode]) -> Iterator[tuple[int, Observation, np.ndarray]]:
        """(episode number, observation, action) of every step in time order, decoding each chosen
        image once as the bag streams past (only the steps waiting for images are held)."""
        order = [(episode, k) for episode, imported in enumerate(episodes) for k in range(len(imported.plan))]
        needed: dict[tuple[str, int], list[tuple[int, int]]] = {}
        for episode, k in order:
            for camera, frame in episodes[episode].plan[k].frames.items():
                topics = self.config.camera(camera).topics
                needed.setdefault((topics.color, frame["color"]), []).append((episode, k))
                if "depth" in frame:
                    needed.setdefault((topics.depth, frame["depth"]), []).append((episode, k))
        waiting = dict.fromkeys(order, 0)
        last_user: dict[tuple[int, int], list[tuple[str, int]]] = {}
        for key, users in needed.items():
            for user in users:
                waiting[user] += 1
            last_user.setdefault(max(users), []).append(key)
        images: dict[tuple[str, int], np.ndarray] = {}
        counters: dict[str, int] = {}
        position = 0
        from tqdm import tqdm

        bar = tqdm(total=len(order), desc=self.path.name, unit="step", leave=False, disable=not self.progress)
        try:
            for topic, _, raw in self._messages(sorted({topic for topic, _ in needed})):
                index = counters.get(topic, 0)
                counters[topic] = index + 1
                users = needed.get((topic, index))
                if not users:
                    continue
                images[(topic, index)] = self._decode(topic, self._deserialize(topic, raw))
                for user in users:
                    waiting[user] -= 1
                while position < len(order) and waiting[order[position]] == 0:
                    episode, k = order[position]
                    yield episode, self._observation(episodes[episode], k, images), episodes[episode].actions[k]
                    position += 1
                    bar.update(1)
                    for key in last_user.get((episode, k), []):
                        images.pop(key, None)   # no later step uses this image
        finally:
            bar.close()
        if position < len(order):
            raise self.fail(f"the bag ends before the images of step {position} arrived (truncated bag?)")

    def _decode(self, topic: str, message) -> np.ndarray:
        """Colour (H, W, 3) uint8 or depth (H, W) float32 metres of one message of `topic`."""
        camera = next(c for c in self.config.cameras if topic in (c.topics.color, c.topics.depth))
        info = self.streams[camera.topics.camera_info].messages
        try:
            if topic == camera.topics.depth:
                return decode_depth_image(message.data, message.encoding, message.height, message.width,
                                          message.step, bool(message.is_bigendian)).metres
            if hasattr(message, "format"):
                size = (int(info[-1].height), int(info[-1].width)) if info else None
                return decode_compressed_image(message.data, message.format, size)
            return decode_color_message(message)
        except ValueError as error:
            text = str(error)
            field_name = next((name for name in ("encoding", "format", "step") if name in text), "data")
            raise self.fail(f"topic {topic}: field {field_name}: {text}") from None

    def _observation(self, episode: ImportedEpisode, k: int, images) -> Observation:
        config = self.config
        step = episode.plan[k]
        rgb, depth, intrinsics, extrinsics = [], [], [], []
        sizes: dict[str, tuple[int, int]] = {}
        for camera in config.cameras:
            frame = step.frames[camera.name]
            color = images[(camera.topics.color, frame["color"])]
            calibration = self._intrinsics(camera, frame["camera_info"])
            height, width = color.shape[:2]
            try:
                calibration.check_image_size(width, height, "color image")
            except ValueError as error:
                raise self.fail(f"topic {camera.topics.color}: field width/height: {error}") from None
            sizes[camera.name] = (height, width)
            if "depth" in frame:
                metres = images[(camera.topics.depth, frame["depth"])]
                if metres.shape != (height, width):
                    raise self.fail(f"topic {camera.topics.depth}: field width/height: depth is "
                                    f"{metres.shape[1]}x{metres.shape[0]}, colour {width}x{height} "
                                    "(record depth aligned to colour)")
            else:
                metres = np.full((height, width), np.nan, np.float32)
            rgb.append(color)
            depth.append(metres)
            intrinsics.append(calibration.K)
            extrinsics.append(self._T_base_cam(camera, step.set_stamp))
        if len(set(sizes.values())) > 1:
            raise self.fail(f"cameras have different image sizes {sizes}: an episode stores one size for all cameras")
        names, joints = self._joints(step.stamp)
        return Observation(
            camera_names=config.camera_names, rgb=np.stack(rgb), depth=np.stack(depth),
            intrinsics=np.stack(intrinsics), T_base_cam=np.stack(extrinsics),
            joint_positions=joints.astype(np.float32), ee_pose=pose_of(episode.poses[k]).astype(np.float32),
            gripper=episode.openings[k], instruction=episode.instruction, stamp=step.stamp, joint_names=names)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ---- the `vla3d convert --config` glue -------------------------------------------------------------

def has_vla3d_meta(path: Path | str) -> bool:
    """True for a bag written by `vla3d convert` (episodes -> bag), read exactly by `bags.BagReader`."""
    from rosbags.rosbag2 import Reader

    try:
        with Reader(Path(path)) as reader:
            return any(c.topic == META_TOPIC for c in reader.connections)
    except Exception:  # noqa: BLE001 - unreadable bags are reported by the importer with bag and cause
        return False


def import_bags(bags: Sequence[Path], root: Path | str, config: RuntimeConfig, *, instruction: str | None = None,
                step_period: float | None = None, first_index: int = 0, progress: bool = False,
                report: Callable[[str], None] = print, said: set[str] | None = None) -> list[Path]:
    """Convert robot bags into episodes `first_index`, ... under `root`; returns the episode dirs.

    Notes (distortion used as published) are reported once: `said` holds those already reported.
    """
    from vla3d_ros.data.episodes import EpisodeWriter

    written: list[Path] = []
    notes = set() if said is None else said
    for bag in bags:
        with RobotBag(bag, config, instruction=instruction, step_period=step_period, progress=progress) as robot:
            episodes = robot.episodes()
            writer, current = None, None
            try:
                for number, observation, action in robot.steps(episodes):
                    if number != current:
                        if writer is not None:
                            written.append(writer.close(True))
                            report(f"{bag} -> {written[-1]} ({len(episodes[current].plan)} steps)")
                        current = number
                        writer = EpisodeWriter(Path(root), first_index + len(written), episodes[number].meta,
                                               episodes[number].camera_names, rgb_format=config.convert.rgb_format)
                    writer.add_step(observation, action)
                if writer is not None:
                    written.append(writer.close(True))
                    report(f"{bag} -> {written[-1]} ({len(episodes[current].plan)} steps)")
            except BaseException as error:
                if writer is not None:
                    writer.abort()   # a no-op for an episode already published
                if isinstance(error, ValueError) and not isinstance(error, BagImportError):
                    raise robot.fail(_first_line(error)) from None   # name the bag
                raise
            for note in robot.notes:
                if note not in notes:
                    notes.add(note)
                    report(f"note: {note}")
    return written
