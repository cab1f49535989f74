"""Episodes <-> ROS 2 bags (MCAP by default, sqlite3 supported), without rclpy.

rosbags' own typestore (ROS 2 Kilted) serialises the standard messages; our `ActionChunk` is
registered from the package's `msg/ActionChunk.msg` text, so every connection carries its
`ros2msg` schema and standard rosbag2 tooling (`ros2 bag info/play`, Foxglove) reads the bag.

One step of an episode = one synchronised set of messages, all with the step's stamp as both
`header.stamp` and bag log time (so steps need strictly increasing `Observation.stamp`):

| topic                                  | type                          | content |
|----------------------------------------|-------------------------------|---------|
| /vla3d/episode_meta                    | std_msgs/String               | episode meta as JSON, once, first stamp (transient-local) |
| /tf_static                             | tf2_msgs/TFMessage            | base -> `<cam>_color_optical_frame` of cameras that never move, once (transient-local) |
| /tf                                    | tf2_msgs/TFMessage            | per step: base -> `ee_link` (the EE pose) and base -> optical frame of moving cameras (wrist) |
| /<cam>/color/image_raw                 | sensor_msgs/Image rgb8        | `rgb_format="raw"` (default, lossless) |
| /<cam>/color/image_raw/compressed      | sensor_msgs/CompressedImage   | `rgb_format="png"` (lossless) or `"jpeg"` (lossy); format `"rgb8; png compressed bgr8"` as image_transport writes it |
| /<cam>/color/camera_info               | sensor_msgs/CameraInfo        | K (plumb_bob, zero distortion), P = [K 0] |
| /<cam>/depth/image_raw                 | sensor_msgs/Image             | `depth_format="32FC1"` metres, NaN invalid (default, lossless) or `"16UC1"` millimetres, 0 invalid |
| /<cam>/segmentation/image_raw          | sensor_msgs/Image 32SC1       | instance ids, only when the episode has segmentation |
| /joint_states                          | sensor_msgs/JointState        | joint names and positions |
| /vla3d/gripper_opening                 | std_msgs/Float64              | gripper opening in [0, 1], 1 = open |
| /vla3d/instruction                     | std_msgs/String               | at the first step and whenever it changes |
| /vla3d/action_chunk                    | vla3d_ros/msg/ActionChunk     | the recorded action, rows = 1 |

Camera frames follow the ROS optical convention (= OpenCV: x right, y down, z forward), so
`T_base_cam` is exactly the transform base -> optical frame. Episodes -> bag -> episodes is lossless
for everything but JPEG RGB and 16UC1 depth, within the messages' representation: stamps are
integer nanoseconds (ROS time) and extrinsics travel as quaternions (exact to ~1e-15).
"""
from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

from vla3d_ros.geometry import matrix_to_quaternion_xyzw, quaternion_xyzw_to_matrix
from vla3d_ros.runtime.images import (
    decode_color_image, decode_compressed_image, decode_depth_image, decode_label_image,
)
from vla3d_ros.types import EE_DELTA_ACTION_NAMES, Observation

BAG_FORMATS = ("mcap", "sqlite3")
RGB_FORMATS = ("raw", "png", "jpeg")
DEPTH_FORMATS = ("32FC1", "16UC1")
BASE_FRAME = "base_link"
EE_FRAME = "ee_link"
META_TOPIC = "/vla3d/episode_meta"
INSTRUCTION_TOPIC = "/vla3d/instruction"
ACTION_TOPIC = "/vla3d/action_chunk"
GRIPPER_TOPIC = "/vla3d/gripper_opening"
JOINT_STATES_TOPIC = "/joint_states"
TF_TOPIC, TF_STATIC_TOPIC = "/tf", "/tf_static"
ACTION_CHUNK_TYPE = "vla3d_ros/msg/ActionChunk"
JPEG_QUALITY = 90

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
JOINT_STATE = "sensor_msgs/msg/JointState"
STRING = "std_msgs/msg/String"
FLOAT64 = "std_msgs/msg/Float64"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"


def camera_frame(camera: str) -> str:
    return f"{camera}_color_optical_frame"


def rgb_topic(camera: str, rgb_format: str) -> str:
    return f"/{camera}/color/image_raw" + ("" if rgb_format == "raw" else "/compressed")


def camera_info_topic(camera: str) -> str:
    return f"/{camera}/color/camera_info"


def depth_topic(camera: str) -> str:
    return f"/{camera}/depth/image_raw"


def segmentation_topic(camera: str) -> str:
    return f"/{camera}/segmentation/image_raw"


class EpisodeSource(Protocol):
    """What the bag writer reads: `vla3d_ros.data.episodes.EpisodeReader` satisfies it."""

    meta: dict

    def __len__(self) -> int: ...
    def observation(self, t: int) -> Observation: ...
    def action(self, t: int) -> np.ndarray: ...
    def segmentation(self, t: int) -> np.ndarray | None: ...


@dataclass
class BagStep:
    """One step read back from a bag."""

    observation: Observation
    action: np.ndarray                 # (A,) float32
    segmentation: np.ndarray | None    # (V, H, W) int32


# ---- typestore --------------------------------------------------------------------------------

def _msg_dirs() -> list[Path]:
    """Where ActionChunk.msg lives: the source tree, then installed ament share dirs."""
    dirs = [Path(__file__).resolve().parents[2] / "msg"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / "share" / "vla3d_ros" / "msg")
    return dirs


@lru_cache(maxsize=1)
def typestore():
    """rosbags typestore of ROS 2 Kilted plus vla3d_ros/msg/ActionChunk."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    for directory in _msg_dirs():
        path = directory / "ActionChunk.msg"
        if path.is_file():
            store.register(get_types_from_msg(path.read_text(), ACTION_CHUNK_TYPE))
            return store
    raise FileNotFoundError(
        f"ActionChunk.msg not found in {[str(d) for d in _msg_dirs()]}; is vla3d_ros installed?"
    )


def latched_qos(transient_local: bool):
    """The offered QoS a bag connection records: transient-local (latched, depth 1) or volatile."""
    from rosbags.interfaces import (
        Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime,
    )

    never = QosTime(0, 0)
    durability = QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE
    return [Qos(QosHistory.KEEP_LAST, 1 if transient_local else 10, QosReliability.RELIABLE,
                durability, never, never, QosLiveliness.AUTOMATIC, never, False)]


# ---- message <-> array helpers -------------------------------------------------------------------

def _stamp_ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def _header(stamp_ns: int, frame_id: str):
    types = typestore().types
    time = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def _image(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    return typestore().types[IMAGE](
        header=_header(stamp_ns, frame_id), height=height, width=width, encoding=encoding,
        is_bigendian=0, step=array.strides[0], data=array.view(np.uint8).reshape(-1),
    )


def decode_color_message(msg) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a rosbags Image or CompressedImage (`runtime.images` decodes)."""
    if hasattr(msg, "format"):
        return decode_compressed_image(msg.data, msg.format)
    return decode_color_image(msg.data, msg.encoding, msg.height, msg.width, msg.step)


def decode_depth_message(msg) -> np.ndarray:
    """(H, W) float32 metres, NaN = invalid, of a rosbags depth Image (16UC1 mm or 32FC1 m)."""
    return decode_depth_image(msg.data, msg.encoding, msg.height, msg.width, msg.step,
                              bool(msg.is_bigendian)).metres


def _labels(msg) -> np.ndarray:
    return decode_label_image(msg.data, msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian))


def _compressed_rgb(rgb: np.ndarray, rgb_format: str, stamp_ns: int, frame_id: str):
    import PIL.Image

    buffer = io.BytesIO()
    if rgb_format == "png":
        PIL.Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    else:
        PIL.Image.fromarray(rgb).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return typestore().types[COMPRESSED_IMAGE](
        header=_header(stamp_ns, frame_id), format=f"rgb8; {rgb_format} compressed bgr8",
        data=np.frombuffer(buffer.getvalue(), np.uint8),
    )


def decode_rgb_message(msg) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a sensor_msgs Image or CompressedImage (PNG / JPEG), through the one
    decode path (`runtime.images`)."""
    from vla3d_ros.runtime.images import decode_color_image, decode_compressed_image

    if hasattr(msg, "encoding"):
        return decode_color_image(msg.data, msg.encoding, msg.height, msg.width, msg.step)
    return decode_compressed_image(msg.data, msg.format)


def _depth_image(depth: np.ndarray, depth_format: str, stamp_ns: int, frame_id: str):
    if depth_format == "32FC1":
        return _image(depth.astype(np.float32), "32FC1", stamp_ns, frame_id)
    millimetres = np.where(np.isfinite(depth) & (depth > 0), np.round(depth * 1000.0), 0.0)
    millimetres = np.where(millimetres <= np.iinfo(np.uint16).max, millimetres, 0.0)
    return _image(millimetres.astype(np.uint16), "16UC1", stamp_ns, frame_id)


def _camera_info(K: np.ndarray, height: int, width: int, stamp_ns: int, frame_id: str):
    types = typestore().types
    projection = np.zeros((3, 4))
    projection[:, :3] = K
    return types[CAMERA_INFO](
        header=_header(stamp_ns, frame_id), height=height, width=width,
        distortion_model="plumb_bob", d=np.zeros(5), k=np.asarray(K, np.float64).reshape(9),
        r=np.eye(3).reshape(9), p=projection.reshape(12), binning_x=0, binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                      do_rectify=False),
    )


def transform_message(T: np.ndarray, stamp_ns: int, parent: str, child: str):
    """geometry_msgs/TransformStamped (rosbags) of T_parent_child."""
    q = matrix_to_quaternion_xyzw(np.asarray(T, np.float64)[:3, :3])
    return transform_from(T[:3, 3], q, stamp_ns, parent, child)


def transform_from(translation, quaternion_xyzw, stamp_ns: int, parent: str, child: str):
    types = typestore().types
    x, y, z = (float(c) for c in translation)
    qx, qy, qz, qw = (float(c) for c in quaternion_xyzw)
    return types["geometry_msgs/msg/TransformStamped"](
        header=_header(stamp_ns, parent), child_frame_id=child,
        transform=types["geometry_msgs/msg/Transform"](
            translation=types["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
            rotation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
        ),
    )


def transform_matrix(transform) -> np.ndarray:
    """(4, 4) of a geometry_msgs/Transform; ValueError for a non-unit quaternion or a non-finite value."""
    rotation, translation = transform.rotation, transform.translation
    quaternion = np.array([rotation.x, rotation.y, rotation.z, rotation.w])
    if not np.all(np.abs(quaternion) <= 1.5) or not 0.5 < np.linalg.norm(quaternion) < 1.5:   # NaN fails too
        raise ValueError(f"rotation {quaternion.tolist()} is not a unit quaternion")
    T = np.eye(4)
    T[:3, :3] = quaternion_xyzw_to_matrix(quaternion)
    T[:3, 3] = [translation.x, translation.y, translation.z]
    if not np.all(np.isfinite(T)):
        raise ValueError(f"translation {T[:3, 3].tolist()} is not finite")
    return T


def _action_chunk(action: np.ndarray, names, step_period: float, stamp_ns: int):
    types = typestore().types
    period_ns = _stamp_ns(step_period)
    return types[ACTION_CHUNK_TYPE](
        header=_header(stamp_ns, BASE_FRAME),
        step_period=types["builtin_interfaces/msg/Duration"](sec=period_ns // 10**9,
                                                             nanosec=period_ns % 10**9),
        dimension_names=list(names), rows=1, cols=len(action),
        data=np.asarray(action, np.float32),
        inference_latency=types["builtin_interfaces/msg/Duration"](sec=0, nanosec=0),
    )


# ---- episode -> bag ------------------------------------------------------------------------------

def write_bag(
    episode: EpisodeSource,
    path: Path | str,
    *,
    storage: str = "mcap",
    rgb_format: str = "raw",
    depth_format: str = "32FC1",
) -> Path:
    """Write one episode as a rosbag2 directory `path` (must not exist); returns `path`.

    Written under `.<name>.partial` next to it and moved at the end, so a crash never leaves a
    half-written bag at `path`.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    for name, value, allowed in (("storage", storage, BAG_FORMATS), ("rgb_format", rgb_format, RGB_FORMATS),
                                 ("depth_format", depth_format, DEPTH_FORMATS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"bag {path} exists already; not overwriting")
    num_steps = len(episode)
    if num_steps == 0:
        raise ValueError("cannot write an empty episode (0 steps) to a bag")
    first = episode.observation(0)
    cameras = first.camera_names
    # Extrinsics of cameras that never move go to /tf_static, the others to /tf every step.
    extrinsics = np.stack([episode.observation(t).T_base_cam for t in range(num_steps)])
    static = np.all(extrinsics == extrinsics[:1], axis=(0, 2, 3))            # (V,)
    meta = dict(episode.meta)
    action_names = tuple(meta.get("action_names", EE_DELTA_ACTION_NAMES))
    step_period = float(meta.get("step_period", 0.0))
    if not step_period > 0:
        raise ValueError(f"episode meta needs step_period > 0 s, got {meta.get('step_period')!r}")

    store = typestore()
    # rosbags names the storage file after the bag directory: build it under its final name in
    # a hidden scratch directory, then move it into place.
    scratch = path.with_name(f".{path.name}.partial")
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(scratch / path.name, version=9, storage_plugin=plugin)
    try:
        writer.open()
        connections: dict[str, Any] = {}

        def publish(topic: str, msgtype: str, msg, stamp_ns: int, latched: bool = False) -> None:
            if topic not in connections:
                connections[topic] = writer.add_connection(
                    topic, msgtype, typestore=store, offered_qos_profiles=latched_qos(latched))
            writer.write(connections[topic], stamp_ns, store.serialize_cdr(msg, msgtype))

        previous_stamp, previous_instruction = -1, None
        for t in range(num_steps):
            obs = first if t == 0 else episode.observation(t)
            if obs.camera_names != cameras:
                raise ValueError(f"step {t} has cameras {obs.camera_names}, step 0 had {cameras}")
            stamp = _stamp_ns(obs.stamp)
            if stamp <= previous_stamp:
                raise ValueError(
                    f"bag steps need strictly increasing stamps: step {t} has {obs.stamp} s after "
                    f"{previous_stamp / 1e9} s"
                )
            previous_stamp = stamp
            if t == 0:
                publish(META_TOPIC, STRING, store.types[STRING](data=json.dumps(meta, sort_keys=True)),
                        stamp, latched=True)
                publish(TF_STATIC_TOPIC, TF_MESSAGE, store.types[TF_MESSAGE](transforms=[
                    transform_message(obs.T_base_cam[v], stamp, BASE_FRAME, camera_frame(cam))
                    for v, cam in enumerate(cameras) if static[v]]), stamp, latched=True)
            if obs.instruction != previous_instruction:
                publish(INSTRUCTION_TOPIC, STRING, store.types[STRING](data=obs.instruction), stamp)
                previous_instruction = obs.instruction
            dynamic = [transform_message(obs.T_base_cam[v], stamp, BASE_FRAME, camera_frame(cam))
                       for v, cam in enumerate(cameras) if not static[v]]
            ee = transform_from(obs.ee_pose[:3], obs.ee_pose[3:], stamp, BASE_FRAME, EE_FRAME)
            publish(TF_TOPIC, TF_MESSAGE, store.types[TF_MESSAGE](transforms=[ee, *dynamic]), stamp)
            height, width = obs.rgb.shape[1:3]
            segmentation = episode.segmentation(t)
            for v, cam in enumerate(cameras):
                frame = camera_frame(cam)
                if rgb_format == "raw":
                    publish(rgb_topic(cam, "raw"), IMAGE, _image(obs.rgb[v], "rgb8", stamp, frame), stamp)
                else:
                    publish(rgb_topic(cam, rgb_format), COMPRESSED_IMAGE,
                            _compressed_rgb(obs.rgb[v], rgb_format, stamp, frame), stamp)
                publish(camera_info_topic(cam), CAMERA_INFO,
                        _camera_info(obs.intrinsics[v], height, width, stamp, frame), stamp)
                if obs.depth is not None:
                    publish(depth_topic(cam), IMAGE, _depth_image(obs.depth[v], depth_format, stamp, frame),
                            stamp)
                if segmentation is not None:
                    publish(segmentation_topic(cam), IMAGE,
                            _image(np.asarray(segmentation[v], np.int32), "32SC1", stamp, frame), stamp)
            publish(JOINT_STATES_TOPIC, JOINT_STATE, store.types[JOINT_STATE](
                header=_header(stamp, BASE_FRAME), name=list(obs.joint_names),
                position=np.asarray(obs.joint_positions, np.float64),
                velocity=np.zeros(0), effort=np.zeros(0)), stamp)
            publish(GRIPPER_TOPIC, FLOAT64, store.types[FLOAT64](data=float(obs.gripper)), stamp)
            publish(ACTION_TOPIC, ACTION_CHUNK_TYPE,
                    _action_chunk(episode.action(t), action_names, step_period, stamp), stamp)
        writer.close()
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    (scratch / path.name).rename(path)
    scratch.rmdir()
    return path


# ---- bag -> episode ------------------------------------------------------------------------------

def is_bag(path: Path | str) -> bool:
    """True for a rosbag2 directory (metadata.yaml) or a bare .mcap / .db3 file."""
    path = Path(path)
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (
        path.is_file() and path.suffix in (".mcap", ".db3"))


class BagReader:
    """Reads a bag written by `write_bag` back into steps (streaming; context manager).

    `meta` is the episode meta; iterate for `BagStep`s in stamp order.
    """

    def __init__(self, path: Path | str) -> None:
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not is_bag(self.path):
            raise ValueError(f"{self.path} is not a rosbag2 bag (directory with metadata.yaml, .mcap or .db3)")
        self._reader = Reader(self.path)
        self._reader.open()
        meta_connections = [c for c in self._reader.connections if c.topic == META_TOPIC]
        if not meta_connections:
            self.close()
            raise ValueError(f"{self.path} has no {META_TOPIC} topic: not written by vla3d convert")
        _, _, raw = next(self._reader.messages(meta_connections))
        self.meta: dict = json.loads(typestore().deserialize_cdr(raw, STRING).data)
        topics = {c.topic for c in self._reader.connections}
        self.camera_names = tuple(self.meta.get("camera_names") or sorted(
            t.split("/")[1] for t in topics if t.endswith("/color/camera_info")))

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[BagStep]:
        store = typestore()
        static: dict[str, np.ndarray] = {}
        instruction: str | None = None
        group: dict[str, Any] = {}
        group_stamp = None
        for connection, stamp, raw in self._reader.messages():
            if connection.topic == META_TOPIC:
                continue
            if group_stamp is not None and stamp != group_stamp:
                yield self._step(group, group_stamp, static, instruction)
                group = {}
            group_stamp = stamp
            msg = store.deserialize_cdr(raw, connection.msgtype)
            if connection.topic == TF_STATIC_TOPIC:
                static.update({tf.child_frame_id: transform_matrix(tf.transform) for tf in msg.transforms})
            elif connection.topic == INSTRUCTION_TOPIC:
                instruction = msg.data
            else:
                group[connection.topic] = msg
        if group_stamp is not None and group:
            yield self._step(group, group_stamp, static, instruction)

    def _step(self, group: dict, stamp_ns: int, static: dict, instruction: str | None) -> BagStep:
        def need(topic: str):
            if topic not in group:
                raise ValueError(f"{self.path}: step at {stamp_ns} ns has no {topic} message")
            return group[topic]

        if instruction is None:
            raise ValueError(f"{self.path}: no {INSTRUCTION_TOPIC} message before {stamp_ns} ns")
        dynamic = {tf.child_frame_id: tf.transform for tf in need(TF_TOPIC).transforms}
        rgb, depth, intrinsics, extrinsics, segmentation = [], [], [], [], []
        for cam in self.camera_names:
            if rgb_topic(cam, "raw") in group:
                rgb.append(decode_color_message(group[rgb_topic(cam, "raw")]))
            else:
                rgb.append(decode_color_message(need(rgb_topic(cam, "compressed"))))
            intrinsics.append(np.asarray(need(camera_info_topic(cam)).k, np.float64).reshape(3, 3))
            frame = camera_frame(cam)
            if frame in dynamic:
                extrinsics.append(transform_matrix(dynamic[frame]))
            elif frame in static:
                extrinsics.append(static[frame])
            else:
                raise ValueError(f"{self.path}: no transform {BASE_FRAME} -> {frame} at {stamp_ns} ns")
            if depth_topic(cam) in group:
                depth.append(decode_depth_message(group[depth_topic(cam)]))
            if segmentation_topic(cam) in group:
                segmentation.append(_labels(group[segmentation_topic(cam)]))
        for name, arrays in (("depth", depth), ("segmentation", segmentation)):
            if arrays and len(arrays) != len(self.camera_names):
                raise ValueError(f"{self.path}: {name} for only {len(arrays)} of "
                                 f"{len(self.camera_names)} cameras at {stamp_ns} ns")
        if EE_FRAME not in dynamic:
            raise ValueError(f"{self.path}: no transform {BASE_FRAME} -> {EE_FRAME} at {stamp_ns} ns")
        ee = dynamic[EE_FRAME]
        joints = need(JOINT_STATES_TOPIC)
        chunk = need(ACTION_TOPIC)
        observation = Observation(
            camera_names=self.camera_names,
            rgb=np.stack(rgb),
            depth=np.stack(depth) if depth else None,
            intrinsics=np.stack(intrinsics),
            T_base_cam=np.stack(extrinsics),
            joint_positions=np.asarray(joints.position, np.float32),
            ee_pose=np.array([ee.translation.x, ee.translation.y, ee.translation.z, ee.rotation.x,
                              ee.rotation.y, ee.rotation.z, ee.rotation.w], np.float32),
            gripper=float(need(GRIPPER_TOPIC).data),
            instruction=instruction,
            stamp=stamp_ns / 1e9,
            joint_names=tuple(joints.name),
        )
        action = np.asarray(chunk.data, np.float32).reshape(chunk.rows, chunk.cols)[0]
        return BagStep(observation, action, np.stack(segmentation) if segmentation else None)


# ---- whole directories (the `vla3d convert` glue over the episode format) ------------------------

def find_bags(path: Path | str) -> list[Path]:
    """`path` itself if it is a bag, else the bags directly inside it, sorted by name."""
    path = Path(path)
    if is_bag(path):
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if not p.name.startswith(".") and is_bag(p))


def episodes_to_bags(episode_dirs: list[Path], out_dir: Path | str, **bag_options) -> list[Path]:
    """One bag per episode directory, named after it, inside `out_dir`; returns the bag paths."""
    from vla3d_ros.data.episodes import EpisodeReader

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_bag(EpisodeReader(d), out_dir / d.name, **bag_options) for d in episode_dirs]


def bag_to_episode(bag: Path | str, root: Path | str, episode_index: int) -> Path:
    """Write the bag's steps as episode `episode_index` under `root`; returns the episode dir."""
    from vla3d_ros.data.episodes import EpisodeWriter

    with BagReader(bag) as reader:
        meta = dict(reader.meta)
        # Re-encode RGB as the episode originally stored it (a PNG episode stays lossless).
        rgb_format = meta.get("rgb_format", "png")
        with EpisodeWriter(Path(root), episode_index, meta, reader.camera_names,
                           rgb_format=rgb_format) as writer:
            for step in reader:
                writer.add_step(step.observation, step.action, step.segmentation)
            return writer.close(bool(meta.get("success", False)))
