"""Test helper: a bag written with rosbags the way `ros2 bag record` records a real robot.

Quirks of real recordings, all on purpose: cameras at different rates (front 30 Hz bgr8 Image with
row padding, wrist 15 Hz CompressedImage JPEG), jittered header stamps and later log times,
16UC1 millimetre depth with 0 holes (front) and 32FC1 metres with NaN holes (wrist), CameraInfo
with plumb_bob distortion, frame ids with a leading '/', a TF chain base_link -> /link1 -> ee_link
on /tf at 100 Hz, the cameras' optical frames on /tf_static (wrist hangs off ee_link), the gripper
as a joint of /joint_states, topics the config does not name (/extra camera, /rosout), and MoveIt
Servo TwistStamped commands on the config's servo topic (and ros2_control JointTrajectory targets).

The ground truth is analytic so tests can check exact values: the end effector moves at constant
velocity `EE_VELOCITY` and turns at `EE_YAW_RATE` about base z, so TF interpolation is exact.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vla3d_ros.geometry import euler_xyz_to_matrix, matrix_to_quaternion_xyzw

SIZE = (32, 32)                               # (H, W) of both cameras (the tiny training preset's)
K_FRONT = np.array([[30.0, 0, 15.5], [0, 31.0, 15.5], [0, 0, 1]])
K_WRIST = np.array([[25.0, 0, 16.0], [0, 25.0, 15.0], [0, 0, 1]])
DISTORTION = [0.05, -0.01, 0.001, 0.0005, 0.0]
EE_START = np.array([0.4, -0.1, 0.3])
EE_VELOCITY = np.array([0.05, 0.02, -0.01])   # m/s
EE_YAW_RATE = 0.2                             # rad/s about base z
R_EE_START = euler_xyz_to_matrix(np.pi, 0.0, 0.1)
LINK1 = np.eye(4)
LINK1[:3, 3] = (0.0, 0.0, 0.333)
T_BASE_FRONT = np.eye(4)
T_BASE_FRONT[:3, :3] = euler_xyz_to_matrix(-2.2, 0.0, 1.6)
T_BASE_FRONT[:3, 3] = (1.0, 0.0, 0.6)
T_EE_WRIST = np.eye(4)
T_EE_WRIST[:3, :3] = euler_xyz_to_matrix(0.0, 0.0, np.pi / 2)
T_EE_WRIST[:3, 3] = (0.05, 0.0, 0.04)
JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
GRIPPER_JOINT = "panda_finger_joint1"
SERVO_TOPIC = "/servo_node/delta_twist_cmds"
TRAJECTORY_TOPIC = "/arm_controller/joint_trajectory"

CONFIG = {
    "base_frame": "base_link",
    "ee_frame": "ee_link",
    "joint_state_topic": "/joint_states",
    "joint_names": list(JOINTS),
    "instruction": "put the cup on the plate",
    "cameras": [
        {"name": "front", "frame_id": "front_optical", "depth_encoding": "16UC1",
         "topics": {"color": "/front/color/image_raw", "camera_info": "/front/color/camera_info",
                    "depth": "/front/aligned_depth_to_color/image_raw"}},
        {"name": "wrist", "frame_id": "wrist_optical", "depth_encoding": "32FC1",
         "topics": {"color": "/wrist/color/image_raw/compressed", "camera_info": "/wrist/color/camera_info",
                    "depth": "/wrist/depth/image_rect_raw"}},
    ],
    "sync": {"slop": 0.03, "queue_size": 10},
    "rates": {"inference_hz": 5.0, "control_hz": 10.0},
    "output": {"adapter": "servo", "servo": {"topic": SERVO_TOPIC, "frame_id": "base_link"},
               "gripper_topic": "/gripper_command"},
    "convert": {"gripper_topic": None, "gripper_joint": GRIPPER_JOINT, "gripper_joint_range": [0.0, 0.04]},
}


def joint_targets(t: float) -> np.ndarray:
    """(7,) joint positions the arm passes through at t (s after the start)."""
    return 0.1 * np.arange(7) + 0.05 * t


def T_base_ee(t: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = euler_xyz_to_matrix(0.0, 0.0, EE_YAW_RATE * t) @ R_EE_START
    T[:3, 3] = EE_START + EE_VELOCITY * t
    return T


def gripper_opening(t: float) -> float:
    return float(np.clip(1.0 - 0.4 * t, 0.0, 1.0))


def T_link1_ee(t: float) -> np.ndarray:
    return np.linalg.inv(LINK1) @ T_base_ee(t)


def _quaternion(T):
    return matrix_to_quaternion_xyzw(T[:3, :3])


def write_robot_bag(path: Path, *, duration: float = 2.0, storage: str = "mcap", seed: int = 0,
                    start: float = 100.0, with_commands: bool = True, drop_topics: tuple[str, ...] = (),
                    with_tf: bool = True, episode_marks: tuple[float, ...] = (),
                    front_encoding: str = "bgr8", size: tuple[int, int] = SIZE, mutate=None) -> Path:
    """Write the robot recording of `duration` seconds (stamps from `start`) to `path`; a
    std_msgs/Empty on /episode_start at each of `episode_marks` (s after `start`);
    `mutate(index, topic, msg)` may change each message before it is written (fuzzing)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from vla3d_ros.data.bags import typestore

    store = typestore()
    types = store.types
    rng = np.random.default_rng(seed)
    height, width = size

    def header(t: float, frame: str):
        ns = int(round(t * 1e9))
        return types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9), frame_id=frame)

    def transform(T, t, parent, child):
        x, y, z = T[:3, 3]
        qx, qy, qz, qw = _quaternion(T)
        return types["geometry_msgs/msg/TransformStamped"](
            header=header(t, parent), child_frame_id=child,
            transform=types["geometry_msgs/msg/Transform"](
                translation=types["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
                rotation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw)))

    def camera_info(K, t, frame):
        return types["sensor_msgs/msg/CameraInfo"](
            header=header(t, frame), height=height, width=width, distortion_model="plumb_bob",
            d=np.array(DISTORTION), k=K.reshape(9), r=np.eye(3).reshape(9),
            p=np.concatenate([K, np.zeros((3, 1))], 1).reshape(12), binning_x=0, binning_y=0,
            roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                          do_rectify=False))

    def image(array, encoding, t, frame, padding=0):
        array = np.ascontiguousarray(array)
        row = array.reshape(height, -1).view(np.uint8)
        padded = np.zeros((height, row.shape[1] + padding), np.uint8)
        padded[:, :row.shape[1]] = row
        return types["sensor_msgs/msg/Image"](header=header(t, frame), height=height, width=width,
                                              encoding=encoding, is_bigendian=0, step=padded.shape[1],
                                              data=padded.reshape(-1))

    def jpeg(rgb, t, frame):
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=95)
        return types["sensor_msgs/msg/CompressedImage"](header=header(t, frame), format="rgb8; jpeg compressed bgr8",
                                                        data=np.frombuffer(buffer.getvalue(), np.uint8))

    def scene_rgb(t, camera):
        rgb = np.full((height, width, 3), 60, np.uint8)
        column = int(8 + 10 * t) % width
        rgb[10:22, column:column + 6] = (210, 40, 30) if camera == "front" else (30, 40, 210)
        return rgb

    def depth_m(t):
        return (0.8 + 0.01 * np.arange(width)[None] * t + np.zeros((height, 1))).astype(np.float32)

    messages = []   # (log ns, topic, msgtype, msg)

    def add(log_t, topic, msgtype, msg):
        messages.append((int(round(log_t * 1e9)), topic, msgtype, msg))

    end = start + duration
    # /tf_static once (latched), with leading slashes as some drivers publish them.
    statics = [transform(LINK1, start, "base_link", "/link1"),
               transform(T_BASE_FRONT, start, "/base_link", "front_optical"),
               transform(T_EE_WRIST, start, "ee_link", "/wrist_optical")]
    if with_tf:
        add(start, "/tf_static", "tf2_msgs/msg/TFMessage", types["tf2_msgs/msg/TFMessage"](transforms=statics))
    for t in np.arange(start, end + 0.2, 0.01):                    # /tf and joints at 100 Hz
        local = t - start
        if with_tf:
            add(t + 0.001, "/tf", "tf2_msgs/msg/TFMessage", types["tf2_msgs/msg/TFMessage"](
                transforms=[transform(T_link1_ee(local), t, "/link1", "ee_link")]))
        positions = np.concatenate([joint_targets(local), [0.04 * gripper_opening(local)]])
        add(t + 0.002, "/joint_states", "sensor_msgs/msg/JointState", types["sensor_msgs/msg/JointState"](
            header=header(t, ""), name=[*JOINTS, GRIPPER_JOINT], position=positions,
            velocity=np.zeros(0), effort=np.zeros(0)))
    for t in np.arange(start, end, 1 / 30):                        # front: 30 Hz, bgr8 padded, 16UC1
        stamp = t + rng.uniform(-0.003, 0.003)
        log = stamp + rng.uniform(0.005, 0.015)
        rgb = scene_rgb(stamp - start, "front")
        millimetres = np.round(depth_m(stamp - start) * 1000).astype(np.uint16)
        millimetres[0, :5] = 0                                     # holes
        add(log, "/front/color/image_raw", "sensor_msgs/msg/Image",
            image(rgb[..., ::-1], front_encoding, stamp, "front_optical", padding=4))
        add(log, "/front/color/camera_info", "sensor_msgs/msg/CameraInfo", camera_info(K_FRONT, stamp, "front_optical"))
        add(log + 0.001, "/front/aligned_depth_to_color/image_raw", "sensor_msgs/msg/Image",
            image(millimetres, "16UC1", stamp, "front_optical"))
        add(log, "/extra/color/image_raw", "sensor_msgs/msg/Image",            # not in the config
            image(rgb, "rgb8", stamp, "extra_optical"))
    for t in np.arange(start + 0.004, end, 1 / 15):                # wrist: 15 Hz, JPEG, 32FC1
        stamp = t + rng.uniform(-0.003, 0.003)
        log = stamp + rng.uniform(0.005, 0.02)
        depth = depth_m(stamp - start)
        depth[5, :3] = np.nan
        add(log, "/wrist/color/image_raw/compressed", "sensor_msgs/msg/CompressedImage",
            jpeg(scene_rgb(stamp - start, "wrist"), stamp, "/wrist_optical"))
        add(log, "/wrist/color/camera_info", "sensor_msgs/msg/CameraInfo", camera_info(K_WRIST, stamp, "/wrist_optical"))
        add(log + 0.002, "/wrist/depth/image_rect_raw", "sensor_msgs/msg/Image", image(depth, "32FC1", stamp, "/wrist_optical"))
    if with_commands:                                               # MoveIt Servo commands at 10 Hz
        from vla3d_ros.runtime.safety import rotation_vector

        for t in np.arange(start, end, 0.1):
            linear = EE_VELOCITY
            angular = rotation_vector(euler_xyz_to_matrix(0.0, 0.0, EE_YAW_RATE * 0.1)) / 0.1
            vector = types["geometry_msgs/msg/Vector3"]
            twist = types["geometry_msgs/msg/Twist"](linear=vector(x=linear[0], y=linear[1], z=linear[2]),
                                                     angular=vector(x=angular[0], y=angular[1], z=angular[2]))
            add(t + 0.003, SERVO_TOPIC, "geometry_msgs/msg/TwistStamped",
                types["geometry_msgs/msg/TwistStamped"](header=header(t, "base_link"), twist=twist))
    for t in np.arange(start, end, 0.1):                            # ros2_control targets at 10 Hz
        target = joint_targets(t + 0.1 - start)
        point = types["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=target, velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0),
            time_from_start=types["builtin_interfaces/msg/Duration"](sec=0, nanosec=100_000_000))
        add(t + 0.004, TRAJECTORY_TOPIC, "trajectory_msgs/msg/JointTrajectory",
            types["trajectory_msgs/msg/JointTrajectory"](header=header(t, ""), joint_names=list(JOINTS), points=[point]))
    for mark in episode_marks:
        add(start + mark, "/episode_start", "std_msgs/msg/Empty", types["std_msgs/msg/Empty"]())
    add(start + 0.5, "/rosout", "std_msgs/msg/String", types["std_msgs/msg/String"](data="[INFO] not for us"))
    messages.sort(key=lambda m: m[0])
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(path, version=9, storage_plugin=plugin)
    writer.open()
    connections = {}
    try:
        for index, (log_ns, topic, msgtype, msg) in enumerate(messages):
            if topic in drop_topics:
                continue
            if mutate is not None:
                mutate(index, topic, msg)
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], log_ns, store.serialize_cdr(msg, msgtype))
    finally:
        writer.close()
    return path


def robot_config(**convert):
    """The robot's RuntimeConfig, with `convert` keys overridden."""
    import copy

    from vla3d_ros.runtime.config import RuntimeConfig

    data = copy.deepcopy(CONFIG)
    data["convert"].update(convert)
    return RuntimeConfig.from_dict(data)
