"""Messages <-> arrays: the ONLY module that knows both ROS messages and numpy / vla3d types.

Everything else is on one side: `runtime/`, `model/`, `sim/` see numpy arrays and the dataclasses
of `vla3d_ros.types`; the nodes in `vla3d_ros/ros/` only move messages in and out of them.

Performance (ENVIRONMENT_NOTES.md): rclpy converts a numpy array assigned to `msg.data` element by
element, orders of magnitude slower than copying `arr.tobytes()`, so messages are always built
from bytes (array.array for typed sequences); decoding uses `np.frombuffer` / strided
`np.ndarray(buffer=...)`, zero-copy views that alias the message buffer.

Bad input raises `ConversionError` (a ValueError) quoting the offending value.
"""
from __future__ import annotations

import array
import math
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point, TransformStamped, TwistStamped, Vector3
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Float64, Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from visualization_msgs.msg import Marker, MarkerArray

from vla3d_ros import types
from vla3d_ros.geometry import matrix_to_quaternion_xyzw, quaternion_xyzw_to_matrix
import vla3d_ros.msg
from vla3d_ros.msg import Instance3D, Instance3DArray
from vla3d_ros.runtime.calibration import CameraCalibration
from vla3d_ros.runtime.diagnostics import Level, Status
from vla3d_ros.runtime.safety import GripperCommand, JointTargetCommand, TwistCommand
from vla3d_ros.runtime.images import DepthImage, decode_color_image, decode_depth_image


class ConversionError(ValueError):
    """A message that cannot be turned into arrays (or arrays into a message)."""


# ---- time ---------------------------------------------------------------------------------------

_NANOS = 1_000_000_000


def _split_seconds(seconds: float, what: str) -> tuple[int, int]:
    if not math.isfinite(seconds) or seconds < 0:
        raise ConversionError(f"{what} must be a finite number of seconds >= 0, got {seconds!r}")
    total = int(round(seconds * _NANOS))
    return total // _NANOS, total % _NANOS


def seconds_to_time(seconds: float) -> Time:
    sec, nanosec = _split_seconds(seconds, "a stamp")
    return Time(sec=sec, nanosec=nanosec)


def time_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_duration(seconds: float) -> Duration:
    sec, nanosec = _split_seconds(seconds, "a duration")
    return Duration(sec=sec, nanosec=nanosec)


def duration_to_seconds(duration: Duration) -> float:
    return duration.sec + duration.nanosec * 1e-9


def make_header(stamp: float, frame_id: str) -> Header:
    return Header(stamp=seconds_to_time(stamp), frame_id=frame_id)


# ---- images and camera info --------------------------------------------------------------------
# Decoding (encodings, padding, depth units, size caps) is runtime logic (`runtime.images`,
# `runtime.calibration`); here only the message fields are handed over.

# encoding -> (dtype, channels) of the images this package publishes (sim bridge, tests).
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}


def image_to_rgb(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a color Image (a zero-copy view for unpadded rgb8)."""
    return decode_color_image(msg.data, msg.encoding, msg.height, msg.width, msg.step)


def image_to_depth(msg: Image, expected_encoding: str | None = None) -> DepthImage:
    """Depth Image (16UC1 mm or 32FC1 m) -> float32 metres, NaN where invalid; an encoding other
    than `expected_encoding` (the configured one, None = any) is refused."""
    return decode_depth_image(msg.data, msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian),
                              expected_encoding)


def array_to_image(pixels: np.ndarray, encoding: str, *, stamp: float = 0.0, frame_id: str = "") -> Image:
    """An Image from (H, W) or (H, W, C) pixels of the encoding's dtype (little endian, no padding)."""
    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(f"unsupported image encoding {encoding!r} (supported: {list(IMAGE_ENCODINGS)})")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    expected = "(H, W)" if channels == 1 else f"(H, W, {channels})"
    if pixels.ndim != (2 if channels == 1 else 3) or (channels > 1 and pixels.shape[-1] != channels):
        raise ConversionError(f"{encoding} needs {expected} pixels, got {pixels.shape}")
    if pixels.dtype != dtype:
        raise ConversionError(f"{encoding} needs {dtype} pixels, got {pixels.dtype}")
    height, width = pixels.shape[:2]
    msg = Image(header=make_header(stamp, frame_id), height=height, width=width, encoding=encoding)
    msg.is_bigendian = 0
    msg.step = width * channels * dtype.itemsize
    msg.data = np.ascontiguousarray(pixels, dtype=dtype.newbyteorder("<")).tobytes()
    return msg


def depth_to_image(metres: np.ndarray, encoding: str, *, stamp: float = 0.0, frame_id: str = "") -> Image:
    """Depth Image of (H, W) metres (NaN / inf / <= 0 = invalid) in REP 118 units:
    32FC1 metres with NaN, or 16UC1 millimetres with 0 (rounded, clipped to 65.535 m)."""
    metres = np.asarray(metres, np.float32)
    invalid = ~np.isfinite(metres) | (metres <= 0)
    if encoding == "32FC1":
        return array_to_image(np.where(invalid, np.nan, metres).astype(np.float32), encoding, stamp=stamp,
                              frame_id=frame_id)
    if encoding == "16UC1":
        millimetres = np.clip(np.round(np.where(invalid, 0.0, metres) * 1000.0), 0, 65535).astype(np.uint16)
        return array_to_image(millimetres, encoding, stamp=stamp, frame_id=frame_id)
    raise ConversionError(f"depth encoding must be 16UC1 or 32FC1, got {encoding!r}")


def camera_info_to_calibration(msg: CameraInfo) -> CameraCalibration:
    """Validated intrinsics of a CameraInfo (ConversionError naming the frame if unusable).

    Images are used as delivered (not rectified), so K is the calibration matrix `k`.
    """
    try:
        return CameraCalibration.from_camera_info(msg.k, msg.width, msg.height, msg.d, msg.distortion_model)
    except ValueError as error:
        raise ConversionError(f"CameraInfo of frame {msg.header.frame_id!r}: {error}") from None


def calibration_to_camera_info(calibration: CameraCalibration, *, stamp: float = 0.0,
                               frame_id: str = "") -> CameraInfo:
    """CameraInfo of a calibration; P = [K | 0] (a single, unrectified camera)."""
    msg = CameraInfo(header=make_header(stamp, frame_id), width=int(calibration.width),
                     height=int(calibration.height))
    msg.distortion_model = calibration.distortion_model
    msg.d = calibration.distortion.tolist()
    msg.k = calibration.K.reshape(9)
    msg.r = np.eye(3).reshape(9)
    projection = np.zeros((3, 4))
    projection[:, :3] = calibration.K
    msg.p = projection.reshape(12)
    return msg


# ---- transforms and poses -----------------------------------------------------------------------


def matrix_to_transform_msg(T: np.ndarray, parent: str, child: str, stamp: float) -> TransformStamped:
    """TransformStamped of T_parent_child (maps child-frame points into the parent frame)."""
    msg = TransformStamped(header=make_header(stamp, parent), child_frame_id=child)
    x, y, z = (float(v) for v in T[:3, 3])
    qx, qy, qz, qw = (float(v) for v in matrix_to_quaternion_xyzw(T[:3, :3]))
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = x, y, z
    msg.transform.rotation.x, msg.transform.rotation.y, msg.transform.rotation.z = qx, qy, qz
    msg.transform.rotation.w = qw
    return msg


def transform_msg_to_matrix(msg: TransformStamped) -> np.ndarray:
    t, q = msg.transform.translation, msg.transform.rotation
    T = np.eye(4)
    T[:3, :3] = quaternion_xyzw_to_matrix(np.array([q.x, q.y, q.z, q.w]))
    T[:3, 3] = (t.x, t.y, t.z)
    return T


def pose_to_matrix(pose: np.ndarray) -> np.ndarray:
    """(7,) x, y, z, qx, qy, qz, qw -> (4, 4)."""
    T = np.eye(4)
    T[:3, :3] = quaternion_xyzw_to_matrix(np.asarray(pose[3:7], np.float64))
    T[:3, 3] = pose[:3]
    return T


def matrix_to_pose(T: np.ndarray) -> np.ndarray:
    """(4, 4) -> (7,) float64 x, y, z, qx, qy, qz, qw."""
    return np.concatenate([T[:3, 3], matrix_to_quaternion_xyzw(T[:3, :3])])


# ---- joint states -------------------------------------------------------------------------------


def joint_state_to_arrays(msg: JointState) -> tuple[tuple[str, ...], np.ndarray]:
    """(names, positions (J,) float64) of a JointState."""
    names = tuple(msg.name)
    positions = np.frombuffer(msg.position, dtype=np.float64) if len(msg.position) else np.zeros(0)
    if len(names) != len(positions):
        raise ConversionError(f"JointState has {len(names)} names but {len(positions)} positions")
    if not np.all(np.isfinite(positions)):
        raise ConversionError(f"JointState positions are not finite: {positions.tolist()}")
    return names, positions


def arrays_to_joint_state(
    names: Sequence[str], positions: np.ndarray, velocities: np.ndarray | None = None, *, stamp: float = 0.0
) -> JointState:
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (len(names),):
        raise ConversionError(f"{len(names)} joint names need positions ({len(names)},), got {positions.shape}")
    msg = JointState(header=make_header(stamp, ""), name=list(names))
    msg.position = array.array("d", positions.tobytes())
    if velocities is not None:
        velocities = np.asarray(velocities, dtype=np.float64)
        if velocities.shape != positions.shape:
            raise ConversionError(f"velocities must be {positions.shape}, got {velocities.shape}")
        msg.velocity = array.array("d", velocities.tobytes())
    return msg


# ---- action chunks ------------------------------------------------------------------------------


def action_chunk_to_msg(chunk: types.ActionChunk, frame_id: str) -> vla3d_ros.msg.ActionChunk:
    actions = np.ascontiguousarray(chunk.actions, dtype=np.float32)  # (H, A)
    msg = vla3d_ros.msg.ActionChunk(header=make_header(chunk.stamp, frame_id))
    msg.step_period = seconds_to_duration(chunk.step_period)
    msg.dimension_names = list(chunk.dimension_names)
    msg.rows, msg.cols = actions.shape
    msg.data = array.array("f", actions.tobytes())
    msg.inference_latency = seconds_to_duration(chunk.inference_latency)
    return msg


def msg_to_action_chunk(msg: vla3d_ros.msg.ActionChunk) -> types.ActionChunk:
    rows, cols = int(msg.rows), int(msg.cols)
    if len(msg.data) != rows * cols:
        raise ConversionError(f"ActionChunk says {rows}x{cols} but carries {len(msg.data)} values")
    if len(msg.dimension_names) != cols:
        raise ConversionError(
            f"ActionChunk has {cols} columns but {len(msg.dimension_names)} names {list(msg.dimension_names)}"
        )
    try:
        return types.ActionChunk(
            actions=np.frombuffer(msg.data, dtype=np.float32).reshape(rows, cols),  # (H, A)
            dimension_names=tuple(msg.dimension_names),
            step_period=duration_to_seconds(msg.step_period),
            stamp=time_to_seconds(msg.header.stamp),
            inference_latency=duration_to_seconds(msg.inference_latency),
        )
    except ValueError as error:
        raise ConversionError(f"ActionChunk: {error}") from None


# ---- controller commands ------------------------------------------------------------------------


def twist_command_to_msg(command: TwistCommand) -> TwistStamped:
    """MoveIt Servo's input: TwistStamped in `command.frame_id`."""
    msg = TwistStamped(header=make_header(command.stamp, command.frame_id))
    msg.twist.linear = Vector3(x=float(command.linear[0]), y=float(command.linear[1]), z=float(command.linear[2]))
    msg.twist.angular = Vector3(x=float(command.angular[0]), y=float(command.angular[1]),
                                z=float(command.angular[2]))
    return msg


def msg_to_twist_command(msg: TwistStamped) -> TwistCommand:
    linear, angular = msg.twist.linear, msg.twist.angular
    return TwistCommand(np.array([linear.x, linear.y, linear.z]), np.array([angular.x, angular.y, angular.z]),
                        msg.header.frame_id, time_to_seconds(msg.header.stamp))


def joint_target_to_msg(command: JointTargetCommand) -> JointTrajectory:
    """ros2_control's joint_trajectory_controller input: one point `time_from_start` ahead.

    A stop command (no positions) is an empty trajectory, which makes the controller hold.
    """
    msg = JointTrajectory(header=make_header(command.stamp, ""), joint_names=list(command.joint_names))
    if not command.is_stop:
        point = JointTrajectoryPoint(time_from_start=seconds_to_duration(command.time_from_start))
        point.positions = array.array("d", np.asarray(command.positions, np.float64).tobytes())
        msg.points = [point]
    return msg


def gripper_command_to_msg(command: GripperCommand) -> Float64:
    """Gripper opening target in [0, 1] (1 = open)."""
    return Float64(data=float(command.position))


# ---- instances and completed points -------------------------------------------------------------


def instances_to_msg(instances: types.Instances, *, stamp: float, frame_id: str) -> Instance3DArray:
    """Instance3DArray of the policy's instances; extents and completed-point counts per instance."""
    counts = instances.num_completed()
    uncertainty = instances.uncertainty
    extents = instances.extents if len(instances.extents) == len(instances.ids) else np.zeros((len(instances.ids), 3))
    labels = instances.labels if len(instances.labels) == len(instances.ids) else ("",) * len(instances.ids)
    msg = Instance3DArray(header=make_header(stamp, frame_id))
    for row, probe_id in enumerate(instances.ids):
        centroid = instances.centroids[row]
        extent = extents[row]
        msg.instances.append(
            Instance3D(
                id=int(probe_id),
                label=labels[row],
                score=float(instances.scores[row]),
                uncertainty=float(uncertainty[row]),
                centroid=Point(x=float(centroid[0]), y=float(centroid[1]), z=float(centroid[2])),
                extent=Vector3(x=float(extent[0]), y=float(extent[1]), z=float(extent[2])),
                num_completed_points=int(counts[row]),
            )
        )
    return msg


def msg_to_instances(msg: Instance3DArray, completed: PointCloud2 | None = None) -> types.Instances:
    """Instances of an Instance3DArray (+ the completed-points cloud of the same step, if given)."""
    items = msg.instances
    instances = types.Instances(
        ids=np.array([item.id for item in items], dtype=np.int64),
        scores=np.array([item.score for item in items], dtype=np.float32),
        centroids=np.array([[item.centroid.x, item.centroid.y, item.centroid.z] for item in items],
                           dtype=np.float32).reshape(-1, 3),
        extents=np.array([[item.extent.x, item.extent.y, item.extent.z] for item in items],
                         dtype=np.float32).reshape(-1, 3),
        labels=tuple(item.label for item in items),
    )
    if completed is not None:
        instances.completed_points, instances.completed_instance = cloud_to_points(completed)
    return instances


# PointCloud2 layout of completed points: x, y, z float32 then the owning instance id (int32), so
# RViz can colour the cloud by instance ("Intensity" transformer on channel `instance`).
_CLOUD_FIELDS = (("x", 0, PointField.FLOAT32), ("y", 4, PointField.FLOAT32),
                 ("z", 8, PointField.FLOAT32), ("instance", 12, PointField.INT32))
_CLOUD_DTYPE = np.dtype({"names": ["x", "y", "z", "instance"],
                         "formats": ["<f4", "<f4", "<f4", "<i4"], "offsets": [0, 4, 8, 12], "itemsize": 16})
_POINTFIELD_DTYPES = {PointField.FLOAT32: "f4", PointField.FLOAT64: "f8", PointField.INT32: "i4",
                      PointField.UINT32: "u4", PointField.INT16: "i2", PointField.UINT16: "u2",
                      PointField.INT8: "i1", PointField.UINT8: "u1"}


def points_to_cloud(points: np.ndarray, instance: np.ndarray | None = None, *, stamp: float,
                    frame_id: str) -> PointCloud2:
    """PointCloud2 (x, y, z float32 + instance int32) of (P, 3) points; instance (P,) or -1."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ConversionError(f"points must be (P, 3), got {points.shape}")
    count = len(points)
    if instance is None:
        instance = np.full(count, -1)
    if np.shape(instance) != (count,):
        raise ConversionError(f"instance must be ({count},), got {np.shape(instance)}")
    records = np.empty(count, dtype=_CLOUD_DTYPE)
    records["x"], records["y"], records["z"] = points[:, 0], points[:, 1], points[:, 2]
    records["instance"] = instance
    msg = PointCloud2(header=make_header(stamp, frame_id), height=1, width=count)
    msg.fields = [PointField(name=name, offset=offset, datatype=datatype, count=1)
                  for name, offset, datatype in _CLOUD_FIELDS]
    msg.is_bigendian = False
    msg.point_step = _CLOUD_DTYPE.itemsize
    msg.row_step = msg.point_step * count
    msg.is_dense = bool(np.all(np.isfinite(points)))
    msg.data = records.tobytes()
    return msg


def cloud_to_points(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    """(points (P, 3) float32, instance (P,) int64, -1 when the cloud has no `instance` field)."""
    fields = {field.name: field for field in msg.fields}
    missing = [name for name in ("x", "y", "z") if name not in fields]
    if missing:
        raise ConversionError(f"PointCloud2 lacks fields {missing} (has {list(fields)})")
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for name in ("x", "y", "z", "instance"):
        if name not in fields:
            continue
        field = fields[name]
        if field.datatype not in _POINTFIELD_DTYPES:
            raise ConversionError(f"PointCloud2 field {name!r} has unknown datatype {field.datatype}")
        names.append(name)
        formats.append(order + _POINTFIELD_DTYPES[field.datatype])
        offsets.append(field.offset)
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    needed = row_step * (height - 1) + width * point_step if height and width else 0
    if point_step == 0 or row_step < width * point_step or len(msg.data) < needed:
        raise ConversionError(
            f"PointCloud2 of {width}x{height} points (point_step {point_step}, row_step {row_step}) "
            f"carries {len(msg.data)} bytes, needs {needed}"
        )
    layout = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
    # Strided view: rows may be padded (row_step > width * point_step).
    records = np.ndarray(shape=(height, width), dtype=layout, buffer=msg.data,
                         strides=(row_step, point_step)).reshape(-1)
    count = height * width
    points = np.stack([records["x"], records["y"], records["z"]], axis=-1).astype(np.float32)
    instance = records["instance"].astype(np.int64) if "instance" in names else np.full(count, -1, np.int64)
    return points, instance


# ---- RViz markers -------------------------------------------------------------------------------

INSTANCE_NAMESPACE = "instances"
LABEL_NAMESPACE = "instance_labels"
PATH_NAMESPACE = "planned_ee_path"


def instance_color(instance_id: int, alpha: float = 1.0) -> ColorRGBA:
    r, g, b = types.INSTANCE_PALETTE[int(instance_id) % len(types.INSTANCE_PALETTE)]
    return ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(alpha))


def _point(xyz: np.ndarray) -> Point:
    return Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def instance_markers(instances: types.Instances, *, stamp: float, frame_id: str,
                     sphere_diameter: float = 0.04) -> list[Marker]:
    """Per instance: a sphere at its centroid coloured by id (opacity = score) and a text
    "id score uncertainty" above it. Marker ids are the instance ids so RViz updates in place."""
    header = make_header(stamp, frame_id)
    markers = []
    for row, probe_id in enumerate(instances.ids):
        score = float(instances.scores[row])
        centroid = instances.centroids[row]
        sphere = Marker(header=header, ns=INSTANCE_NAMESPACE, id=int(probe_id), type=Marker.SPHERE,
                        action=Marker.ADD)
        sphere.pose.position = _point(centroid)
        sphere.pose.orientation.w = 1.0
        sphere.scale = Vector3(x=sphere_diameter, y=sphere_diameter, z=sphere_diameter)
        sphere.color = instance_color(probe_id, alpha=max(0.3, score))
        label = Marker(header=header, ns=LABEL_NAMESPACE, id=int(probe_id), type=Marker.TEXT_VIEW_FACING,
                       action=Marker.ADD)
        label.pose.position = _point(centroid + np.array([0.0, 0.0, sphere_diameter]))
        label.pose.orientation.w = 1.0
        label.scale.z = 0.6 * sphere_diameter
        label.color = instance_color(probe_id)
        name = instances.labels[row] if row < len(instances.labels) and instances.labels[row] else f"#{int(probe_id)}"
        label.text = f"{name} s={score:.2f} u={1.0 - score:.2f}"
        markers += [sphere, label]
    return markers


def path_marker(path: np.ndarray, *, stamp: float, frame_id: str, width: float = 0.005) -> Marker:
    """LINE_STRIP through (K, 3) base-frame points (the planned end-effector path)."""
    path = np.asarray(path)
    if path.ndim != 2 or path.shape[1] != 3:
        raise ConversionError(f"path must be (K, 3), got {path.shape}")
    marker = Marker(header=make_header(stamp, frame_id), ns=PATH_NAMESPACE, id=0, type=Marker.LINE_STRIP,
                    action=Marker.ADD)
    marker.pose.orientation.w = 1.0
    marker.scale.x = width
    marker.color = ColorRGBA(r=1.0, g=0.1, b=0.6, a=1.0)
    marker.points = [_point(p) for p in path]
    return marker


def planned_path_marker(chunk: types.ActionChunk, ee_position: np.ndarray, *, stamp: float,
                        frame_id: str) -> Marker:
    """LINE_STRIP of the end-effector positions a chunk of EE deltas plans: p_ee, then after each row.

    `ActionChunk.planned_ee_positions` (shared with the demo's image overlay); ConversionError for a
    chunk of another action space.
    """
    try:
        path = chunk.planned_ee_positions(ee_position)  # (H+1, 3)
    except ValueError as error:
        raise ConversionError(str(error)) from None
    return path_marker(path, stamp=stamp, frame_id=frame_id)


def marker_array(markers: Sequence[Marker], *, clear_first: bool = True) -> MarkerArray:
    """A MarkerArray; `clear_first` prepends DELETEALL so instances that vanished disappear."""
    prefix = [Marker(action=Marker.DELETEALL)] if clear_first else []
    return MarkerArray(markers=prefix + list(markers))


# ---- diagnostics --------------------------------------------------------------------------------


def status_to_msg(status: Status, hardware_id: str = "") -> DiagnosticStatus:
    return DiagnosticStatus(
        level=bytes([int(status.level)]), name=status.name, message=status.message, hardware_id=hardware_id,
        values=[KeyValue(key=str(key), value=str(value)) for key, value in status.values.items()],
    )


def msg_to_status(msg: DiagnosticStatus) -> Status:
    return Status(msg.name, Level(msg.level[0] if isinstance(msg.level, bytes) else int(msg.level)),
                  msg.message, {kv.key: kv.value for kv in msg.values})


def diagnostics_to_msg(statuses: Sequence[Status], *, stamp: float, hardware_id: str = "") -> DiagnosticArray:
    return DiagnosticArray(header=make_header(stamp, ""),
                           status=[status_to_msg(status, hardware_id) for status in statuses])
