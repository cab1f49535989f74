"""A synthetic RGB-D robot: the publisher side of the soak and the fault-injection tests.

`SyntheticRobot` publishes what a real RGB-D robot publishes, at a fixed rate on the topics of a
runtime config: per camera color (rgb8), CameraInfo and depth (in the configured encoding), the
joint state and gripper opening, the transforms of cameras without fixed extrinsics (moving, e.g.
a wrist camera) and of the end effector. Reliable QoS, so a bag recorder can keep every message.
`fault(robot, stamp)` may replace a tick's `publish_set(stamp)` (the fault-injection tests use it).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import rosgraph_msgs.msg
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64

from vla3d_ros.geometry import euler_xyz_to_matrix, intrinsics_from_fovy, matrix_to_quaternion_xyzw
from vla3d_ros.ros import conversions
from vla3d_ros.ros import topics
from vla3d_ros.ros.qos import RELIABLE_QOS
from vla3d_ros.runtime.calibration import CameraCalibration
from vla3d_ros.runtime.config import RuntimeConfig

Mutation = Callable[[str, str, object], object | None]   # (camera, stream, msg) -> msg, or None = withheld
EE_POSITION = (0.45, 0.0, 0.3)


def camera_pose(index: int) -> np.ndarray:
    """(4, 4) T_base_cam of the index-th synthetic camera: on a circle, looking down at the table."""
    T = np.eye(4)
    T[:3, :3] = euler_xyz_to_matrix(-2.2, 0.0, 1.57 + 0.4 * index)
    T[:3, 3] = (0.5 + 0.5 * np.cos(index), 0.5 * np.sin(index), 0.6)
    return T


def synthetic_config(cameras: Sequence[str] = ("front", "side", "wrist"), *, moving: Sequence[str] = ("wrist",),
                     prefix: str = "/soak", **overrides) -> RuntimeConfig:
    """A runtime config for `SyntheticRobot`: RGB-D cameras (32FC1 depth, 16UC1 for moving ones);
    fixed cameras carry config extrinsics, moving ones come from TF. `overrides` replace top-level
    keys (dicts are merged one level deep)."""
    camera_entries = []
    for index, name in enumerate(cameras):
        entry = {"name": name, "frame_id": f"{name}_optical", "depth_encoding": "16UC1" if name in moving else "32FC1",
                 "topics": {stream: f"{prefix}/{name}/{stream}" for stream in ("color", "camera_info", "depth")}}
        if name not in moving:
            T = camera_pose(index)
            entry["extrinsics"] = {"xyz": T[:3, 3].tolist(), "quat_xyzw": matrix_to_quaternion_xyzw(T[:3, :3]).tolist()}
        camera_entries.append(entry)
    data = {
        "base_frame": "world", "ee_frame": "ee", "joint_state_topic": f"{prefix}/joint_states",
        "instruction": "pick up the red cube", "instruction_topic": f"{prefix}/instruction",
        "estop_topic": f"{prefix}/estop", "cameras": camera_entries,
        "safety": {"start_in_dry_run": False},
        "output": {"servo": {"topic": f"{prefix}/servo", "frame_id": "world"}, "gripper_topic": f"{prefix}/gripper"},
    }
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return RuntimeConfig.from_dict(data)


class SyntheticRobot(Node):
    """Publishes synthetic synchronised RGB-D sets of every configured camera at `rate` Hz.

    Args:
        transforms: node -> where the EE and moving-camera transforms go (`NodeGraph.transform_sink`).
        sim_time: own /clock (published before each set; `sim_now` is the time) instead of wall time.
    """

    def __init__(self, config: RuntimeConfig, transforms: Callable[[Node], object], *, rate: float = 30.0, image_size: int = 128,
                 num_joints: int = 7, sim_time: bool = False, seed: int = 0, context=None,
                 name: str = "vla3d_synthetic_robot") -> None:
        super().__init__(name, context=context)
        self.config = config
        self.transforms = transforms(self)
        self.rate = rate
        self.sim_time = sim_time
        self.sim_now = 100.0
        self.fault: Callable[[SyntheticRobot, float], None] | None = None
        self.running = False
        self.sets = 0
        rng = np.random.default_rng(seed)
        size = image_size
        calibration = CameraCalibration(K=intrinsics_from_fovy(60.0, size, size), width=size, height=size)
        # Every camera's messages are encoded once and restamped per set: the robot stands in for
        # camera drivers, which run in processes of their own, so encoding 3 x 30 Hz images in this
        # process would load the graph under test with work that is not its own (measured: ~15 % of
        # the soak process's wall time went to depth encoding alone).
        self._templates: dict[str, dict[str, object]] = {}
        for camera in config.cameras:
            frame = camera.frame_id
            templates = {"camera_info": conversions.calibration_to_camera_info(calibration, frame_id=frame),
                         "color": conversions.array_to_image(rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                                                             "rgb8", frame_id=frame)}
            if camera.has_depth:
                templates["depth"] = conversions.depth_to_image(rng.uniform(0.4, 1.2, (size, size)).astype(np.float32),
                                                                camera.depth_encoding, frame_id=frame)
            self._templates[camera.name] = templates
        # Cameras without config extrinsics get their pose on TF with every set (while listed here).
        self.tf_cameras = {c.name for c in config.cameras if c.extrinsics is None}
        self._poses = {c.name: camera_pose(i) for i, c in enumerate(config.cameras)}
        self.joint_names = list(config.joint_names) or [f"joint{i}" for i in range(1, num_joints + 1)]
        self.joint_positions = np.linspace(-0.5, 0.5, len(self.joint_names))
        self.publishers_by_stream = {}
        for camera in config.cameras:
            for stream, msg_type in (("color", Image), ("camera_info", CameraInfo), ("depth", Image)):
                topic = getattr(camera.topics, stream)
                if topic:
                    self.publishers_by_stream[(camera.name, stream)] = self.create_publisher(msg_type, topic,
                                                                                             RELIABLE_QOS)
        self.joint_publisher = self.create_publisher(JointState, config.joint_state_topic, RELIABLE_QOS)
        self.gripper_publisher = self.create_publisher(Float64, topics.GRIPPER_OPENING, RELIABLE_QOS)
        self.clock_publisher = self.create_publisher(rosgraph_msgs.msg.Clock, topics.CLOCK, RELIABLE_QOS) if sim_time else None
        ee = np.eye(4)
        ee[:3, 3] = EE_POSITION
        self.transforms.set_transform(config.base_frame, config.ee_frame, ee, None)
        self.create_timer(1.0 / rate, self._tick)

    def now(self) -> float:
        return self.sim_now if self.sim_time else self.get_clock().now().nanoseconds * 1e-9

    def _tick(self) -> None:
        if not self.running:
            return
        if self.sim_time:
            self.sim_now += 1.0 / self.rate
            self.clock_publisher.publish(rosgraph_msgs.msg.Clock(clock=conversions.seconds_to_time(self.sim_now)))
        stamp = self.now()
        (self.fault or SyntheticRobot.publish_set)(self, stamp)

    def messages(self, camera: str, stamp: float) -> dict[str, object]:
        """The messages of one camera at `stamp`: stream -> a new message (a fault may set its fields;
        the pixel buffers are shared with the templates and must be replaced, not edited in place)."""
        out = {}
        for stream, template in self._templates[camera].items():
            msg = copy.copy(template)
            msg.header = conversions.make_header(stamp, template.header.frame_id)
            out[stream] = msg
        return out

    def publish_set(self, stamp: float, mutate: Mutation | None = None) -> None:
        """One set of every camera plus proprioception at `stamp`; `mutate` may alter or withhold any message."""
        for camera in self.tf_cameras:
            self.transforms.set_transform(self.config.base_frame, self.config.camera(camera).frame_id,
                                          self._poses[camera], stamp)
        self.joint_publisher.publish(conversions.arrays_to_joint_state(self.joint_names, self.joint_positions,
                                                                       stamp=stamp))
        self.gripper_publisher.publish(Float64(data=1.0))
        for camera in self.config.camera_names:
            for stream, msg in self.messages(camera, stamp).items():
                msg = msg if mutate is None else mutate(camera, stream, msg)
                if msg is not None:
                    self.publishers_by_stream[(camera, stream)].publish(msg)
        self.sets += 1
