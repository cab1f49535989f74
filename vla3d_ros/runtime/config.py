"""The runtime YAML schema (cameras, sync, rates, watchdogs, safety, output, calibration monitor) as
validated dataclasses.

One file describes one robot set-up (`config/robot_sim.yaml`, `config/robot_example_panda.yaml`).
Every key is checked: an unknown key, a wrong type or an out-of-range value raises `ConfigError`
quoting the dotted key path and the bad value, e.g.
`safety.max_linear_speed: expected a number > 0, got -1.0`.

The dataclasses are built by one generic, type-hint driven reader (`_read_dataclass`), so adding a
field to a dataclass is all it takes to add a key; each dataclass's `__post_init__` adds the
cross-field checks (ranges, workspace min < max, topics present, unique camera names).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
import yaml

from vla3d_ros.errors import ConfigError
from vla3d_ros.geometry import quaternion_xyzw_to_matrix

DEPTH_ENCODINGS = ("16UC1", "32FC1")


def _require(condition: bool, key: str, requirement: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"{key}: expected {requirement}, got {value!r}")


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


@dataclass(frozen=True)
class Extrinsics:
    """Pose of a camera's optical frame in the base frame (OpenCV axes), metres + quaternion xyzw."""

    xyz: tuple[float, float, float]
    quat_xyzw: tuple[float, float, float, float]

    def __post_init__(self) -> None:
        _require(all(math.isfinite(v) for v in self.xyz), "xyz", "finite numbers", self.xyz)
        norm = float(np.linalg.norm(self.quat_xyzw))
        _require(
            math.isfinite(norm) and abs(norm - 1.0) < 1e-3,
            "quat_xyzw", "a unit quaternion (x, y, z, w)", self.quat_xyzw,
        )

    def matrix(self) -> np.ndarray:
        """(4, 4) float64 T_base_cam."""
        T = np.eye(4)
        T[:3, :3] = quaternion_xyzw_to_matrix(np.asarray(self.quat_xyzw))
        T[:3, 3] = self.xyz
        return T


@dataclass(frozen=True)
class CameraTopics:
    color: str
    camera_info: str
    depth: str | None = None

    def __post_init__(self) -> None:
        for name in ("color", "camera_info"):
            _require(bool(getattr(self, name)), name, "a topic name", getattr(self, name))


@dataclass(frozen=True)
class CameraConfig:
    """One RGB(-D) camera: its topics, optical frame and (optionally) fixed extrinsics.

    Without `extrinsics` the pose comes from TF (`frame_id` in the base frame).
    """

    name: str
    frame_id: str
    topics: CameraTopics
    depth_encoding: Literal["16UC1", "32FC1"] | None = None
    extrinsics: Extrinsics | None = None

    def __post_init__(self) -> None:
        _require(bool(self.name), "name", "a non-empty name", self.name)
        _require(bool(self.frame_id), "frame_id", "a frame id", self.frame_id)
        if self.topics.depth is not None:
            _require(
                self.depth_encoding is not None, "depth_encoding",
                f"one of {DEPTH_ENCODINGS} when a depth topic is set", self.depth_encoding,
            )

    @property
    def has_depth(self) -> bool:
        return self.topics.depth is not None


@dataclass(frozen=True)
class SyncConfig:
    """Approximate-time synchronisation of all camera streams (message_filters semantics)."""

    slop: float = 0.02               # s, largest stamp span of one synchronised set
    queue_size: int = 10             # messages kept per stream while waiting for a match
    max_clock_jump_back: float = 1.0  # s, a stamp this far in the past resets the queues (bag loop)

    def __post_init__(self) -> None:
        _require(self.slop >= 0 and math.isfinite(self.slop), "slop", "a number >= 0", self.slop)
        _require(1 <= self.queue_size <= 1000, "queue_size", "an integer in [1, 1000]", self.queue_size)
        _require(_positive(self.max_clock_jump_back), "max_clock_jump_back", "a number > 0",
                 self.max_clock_jump_back)


@dataclass(frozen=True)
class RatesConfig:
    inference_hz: float = 5.0
    control_hz: float = 30.0
    diagnostics_hz: float = 1.0

    def __post_init__(self) -> None:
        for name in ("inference_hz", "control_hz", "diagnostics_hz"):
            value = getattr(self, name)
            _require(_positive(value) and value <= 1000, name, "a rate in (0, 1000] Hz", value)


@dataclass(frozen=True)
class ExecutorConfig:
    """Chunk execution: ACT temporal ensembling (None = newest chunk only) and chunk expiry."""

    temporal_ensemble_coeff: float | None = 0.01
    max_chunk_age: float = 2.0       # s after its observation a chunk is no longer executed

    def __post_init__(self) -> None:
        if self.temporal_ensemble_coeff is not None:
            _require(math.isfinite(self.temporal_ensemble_coeff), "temporal_ensemble_coeff",
                     "a finite number or null", self.temporal_ensemble_coeff)
        _require(_positive(self.max_chunk_age), "max_chunk_age", "a number > 0", self.max_chunk_age)


@dataclass(frozen=True)
class WatchdogConfig:
    observation_timeout: float = 0.5  # s, max age of the observation a chunk was computed from
    command_timeout: float = 0.1      # s without a fresh chunk row -> hold (MoveIt Servo's default)
    camera_timeout: float = 1.0       # s without a message on a camera stream -> ERROR diagnostics
    # s from the first diagnostics check during which camera silence is not an error yet: camera
    # drivers and simulators often start after the graph.
    camera_startup_grace: float = 5.0

    def __post_init__(self) -> None:
        for name in ("observation_timeout", "command_timeout", "camera_timeout"):
            _require(_positive(getattr(self, name)), name, "a number > 0", getattr(self, name))
        _require(math.isfinite(self.camera_startup_grace) and self.camera_startup_grace >= 0,
                 "camera_startup_grace", "a number >= 0", self.camera_startup_grace)


@dataclass(frozen=True)
class WorkspaceConfig:
    """Axis-aligned box (base frame, metres) the end effector target must stay in."""

    min: tuple[float, float, float] = (-1.0, -1.0, 0.0)
    max: tuple[float, float, float] = (1.0, 1.0, 1.0)
    mode: Literal["clip", "reject"] = "clip"

    def __post_init__(self) -> None:
        _require(all(math.isfinite(v) for v in self.min + self.max), "min",
                 "finite min/max", (self.min, self.max))
        _require(all(lo < hi for lo, hi in zip(self.min, self.max)), "min",
                 f"min < max per axis (max is {list(self.max)})", list(self.min))


@dataclass(frozen=True)
class SafetyConfig:
    workspace: WorkspaceConfig = field(default_factory=WorkspaceConfig)
    max_linear_speed: float = 0.25   # m/s
    max_angular_speed: float = 1.0   # rad/s
    max_joint_step: float = 0.05     # rad (or m) per control step
    start_in_dry_run: bool = True

    def __post_init__(self) -> None:
        for name in ("max_linear_speed", "max_angular_speed", "max_joint_step"):
            _require(_positive(getattr(self, name)), name, "a number > 0", getattr(self, name))


@dataclass(frozen=True)
class ServoOutputConfig:
    """MoveIt Servo: geometry_msgs/TwistStamped on its command topic."""

    topic: str = "/servo_node/delta_twist_cmds"
    frame_id: str = ""               # empty = the base frame


@dataclass(frozen=True)
class Ros2ControlOutputConfig:
    """ros2_control joint_trajectory_controller: trajectory_msgs/JointTrajectory."""

    topic: str = "/joint_trajectory_controller/joint_trajectory"
    joint_names: tuple[str, ...] = ()
    time_from_start: float = 0.1     # s, the single point's time_from_start

    def __post_init__(self) -> None:
        _require(_positive(self.time_from_start), "time_from_start", "a number > 0",
                 self.time_from_start)


@dataclass(frozen=True)
class OutputConfig:
    adapter: Literal["servo", "ros2_control"] = "servo"
    servo: ServoOutputConfig = field(default_factory=ServoOutputConfig)
    ros2_control: Ros2ControlOutputConfig = field(default_factory=Ros2ControlOutputConfig)
    gripper_topic: str | None = "/vla3d/gripper_command"

    def __post_init__(self) -> None:
        if self.adapter == "ros2_control":
            _require(bool(self.ros2_control.joint_names), "ros2_control.joint_names",
                     "the controller's joint names when adapter is ros2_control",
                     list(self.ros2_control.joint_names))


@dataclass(frozen=True)
class ConvertConfig:
    """How `vla3d convert --config` turns this robot's bags into episodes (`data.bag_import`)."""

    step_period: float | None = None   # s between episode steps; null = 1 / rates.control_hz
    # Actions: "ee_pose" = the end-effector pose change to the next step (the policy's EE-delta
    # space); "command" = the output adapter's recorded commands (servo TwistStamped integrated
    # over the step, or ros2_control JointTrajectory targets).
    actions: Literal["ee_pose", "command"] = "ee_pose"
    gripper_topic: str | None = "/vla3d/gripper_opening"   # std_msgs/Float64 opening in [0, 1]
    gripper_joint: str | None = None   # instead: this joint's position is the opening ...
    gripper_joint_range: tuple[float, float] = (0.0, 0.08)  # ... mapped from (closed, open) to (0, 1)
    # Gripper target of a step: the next step's opening, or the last output.gripper_topic command.
    gripper_target: Literal["opening", "command"] = "opening"
    episode_topic: str | None = None   # any message on it starts a new episode (else one per bag)
    task: str = "real"
    rgb_format: Literal["jpeg", "png"] = "jpeg"

    def __post_init__(self) -> None:
        if self.step_period is not None:
            _require(_positive(self.step_period), "step_period", "a number > 0 or null", self.step_period)
        closed, opened = self.gripper_joint_range
        _require(closed != opened, "gripper_joint_range", "two different positions (closed, open)",
                 list(self.gripper_joint_range))


@dataclass(frozen=True)
class CalibrationMonitorConfig:
    """The calibration health monitor (`vla3d_ros.calibration.health`): each camera's depth checked
    against the other cameras' through the current extrinsics, `check_hz` times a second, and
    against the arm's surface placed by the joint states (`calibration.arm_check`)."""

    enabled: bool = False
    check_hz: float = 1.0
    # Beyond the sim's noise floor (worst nominal check, 3 cameras, depth noise 5 mm at 1 m:
    # 0.8 cm / 1.0 deg) and below the 2 cm / 2 deg a knocked camera must raise.
    warn_translation: float = 0.012  # m the camera appears moved by before a WARN
    warn_rotation_deg: float = 1.5   # deg the camera appears turned by before a WARN
    # checks averaged before a WARN: 2 raised 1 false alarm in 600 nominal checks with depth noise
    # (`vla3d calibrate monitor-eval --episodes 20 --steps 30`), 3 none; at 1 Hz the WARN still comes < 5 s
    consecutive: int = 3
    hold_on_miscalibration: bool = False   # no observation (the arm holds) while a camera is WARN
    voxel: float = 0.01              # m, point cloud down-sampling
    region_min: tuple[float, float, float] = (-0.3, -0.8, -0.05)   # base-frame box of the
    region_max: tuple[float, float, float] = (1.1, 0.8, 0.8)       # compared points (the workcell)
    # the arm check (`calibration.arm_check`): each camera's depth registered onto the arm's
    # surface placed by the joint states, where the node has the arm's link poses
    arm_check: bool = True
    arm_spacing: float = 0.005       # m between the arm's surface samples (finer parts: finer)
    arm_min_points: int = 150        # arm surface samples seen (over the window) to check a camera
    # The arm seen from a fixed camera is small and mostly round links: its registration carried a
    # bias of ~0.7 cm / 0.4 deg on the true calibration in the sim (depth noise 5 mm at 1 m), hence
    # 2 cm until a registration ending on a worse fit than the calibration was no longer reported
    # (`arm_check`); since then at most 1.11 cm / 0.83 deg in 1,200 checks (600 with the arm
    # hovering, 600 at work), and 1.5 cm names the wrist camera's 2 cm slides more often.
    arm_warn_translation: float = 0.015
    arm_warn_rotation_deg: float = 1.5
    # the robot's URDF file (its collision primitives are the arm's surface; link poses from TF);
    # "" = no arm check on the robot
    urdf: str = ""

    def __post_init__(self) -> None:
        _require(_positive(self.check_hz) and self.check_hz <= 50, "check_hz", "a rate in (0, 50] Hz", self.check_hz)
        for name in ("warn_translation", "warn_rotation_deg", "voxel", "arm_spacing", "arm_warn_translation",
                     "arm_warn_rotation_deg"):
            _require(_positive(getattr(self, name)), name, "a number > 0", getattr(self, name))
        _require(1 <= self.consecutive <= 100, "consecutive", "an integer in [1, 100]", self.consecutive)
        _require(self.arm_spacing <= 0.1, "arm_spacing", "at most 0.1 m", self.arm_spacing)
        _require(10 <= self.arm_min_points <= 100_000, "arm_min_points", "an integer in [10, 100000]",
                 self.arm_min_points)
        _require(all(lo < hi for lo, hi in zip(self.region_min, self.region_max)), "region_min",
                 f"region_min < region_max per axis (region_max is {list(self.region_max)})", list(self.region_min))


@dataclass(frozen=True)
class RuntimeConfig:
    """Everything the live graph needs to know about one robot set-up."""

    base_frame: str
    cameras: tuple[CameraConfig, ...]
    ee_frame: str = ""               # TF frame of the end effector (real robots)
    joint_state_topic: str = "/joint_states"
    joint_names: tuple[str, ...] = ()  # proprioception order; empty = as published
    instruction: str = ""
    instruction_topic: str = "/vla3d/instruction"
    max_instruction_chars: int = 1000
    estop_topic: str = "/vla3d/estop"
    checkpoint: str | None = None
    policy: str | None = None        # ws://host:port of a policy server (`vla3d serve`), instead of a checkpoint
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # torch intra-op threads of the policy. 1 by default: when other processes hold the cores,
    # intra-op threads spin waiting for each other and a forward pass gets slower, not faster;
    # raise it on a dedicated multi-core CPU after measuring (`vla3d bench`).
    torch_threads: int = 1
    # the policy forward's numeric precision (`model.precision`): "auto" = bf16 autocast where the
    # CPU/GPU computes bf16 natively, fp32 elsewhere
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # act on the trained instruction most similar to the given one (`model/instruction_retrieval.py`);
    # the instruction status on /diagnostics names it. Off: the given instruction as it is.
    instruction_retrieval: bool = True
    sync: SyncConfig = field(default_factory=SyncConfig)
    rates: RatesConfig = field(default_factory=RatesConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    convert: ConvertConfig = field(default_factory=ConvertConfig)
    calibration_monitor: CalibrationMonitorConfig = field(default_factory=CalibrationMonitorConfig)

    def __post_init__(self) -> None:
        _require(bool(self.base_frame), "base_frame", "a frame id", self.base_frame)
        _require(len(self.cameras) >= 1, "cameras", "at least one camera", list(self.cameras))
        names = [camera.name for camera in self.cameras]
        _require(len(set(names)) == len(names), "cameras", "unique camera names", names)
        streams = [topic for camera in self.cameras
                   for topic in (camera.topics.color, camera.topics.camera_info, camera.topics.depth) if topic]
        _require(len(set(streams)) == len(streams), "cameras", "a different topic for every camera stream",
                 sorted({topic for topic in streams if streams.count(topic) > 1}))
        _require(1 <= self.max_instruction_chars <= 100_000, "max_instruction_chars",
                 "an integer in [1, 100000]", self.max_instruction_chars)
        if self.policy is not None:
            _require(_is_websocket_url(self.policy), "policy", "a policy server URL ws://host:port (or wss://)",
                     self.policy)
            _require(not self.checkpoint, "policy", f"no checkpoint as well (checkpoint is {self.checkpoint!r})",
                     self.policy)
        _require(1 <= self.torch_threads <= 256, "torch_threads", "an integer in [1, 256]", self.torch_threads)
        # A stale observation must be caught before the chunk computed from it expires.
        _require(self.watchdog.observation_timeout <= self.executor.max_chunk_age,
                 "watchdog.observation_timeout",
                 f"<= executor.max_chunk_age ({self.executor.max_chunk_age})",
                 self.watchdog.observation_timeout)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(camera.name for camera in self.cameras)

    def camera(self, name: str) -> CameraConfig:
        for camera in self.cameras:
            if camera.name == name:
                return camera
        raise KeyError(f"no camera named {name!r}; configured: {list(self.camera_names)}")

    @classmethod
    def from_dict(cls, data: Any) -> "RuntimeConfig":
        return _read_dataclass(cls, data, "")

    def to_dict(self) -> dict:
        """Plain dict (YAML-serialisable) that `from_dict` reads back to an equal config."""
        return _to_plain(self)


def _is_websocket_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("ws", "wss") and bool(parts.hostname) and parts.port is not None
    except ValueError:   # a port out of range or not a number
        return False


def load_runtime_config(path: str | Path) -> RuntimeConfig:
    """Read and validate a runtime YAML file; errors name the file and the bad key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read YAML: {error}") from error
    try:
        return RuntimeConfig.from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error


# ---- generic typed reader ------------------------------------------------------------------------

def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _read_dataclass(cls: type, data: Any, key: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{key or '<root>'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{_join(key, str(unknown[0]))}: unknown key (value {data[unknown[0]]!r}); "
            f"allowed keys: {sorted(fields)}"
        )
    values = {}
    for name, spec in fields.items():
        if name in data:
            values[name] = _read_value(hints[name], data[name], _join(key, name))
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_join(key, name)}: required key is missing")
    try:
        return cls(**values)
    except ConfigError as error:
        # Field checks name their key relative to their own section; prefix the section path.
        raise ConfigError(_join(key, str(error))) from None


def _read_value(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _read_value(options[0], value, key)
        raise ConfigError(f"{key}: unsupported union type {hint}")  # schema bug, not user input
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_read_value(args[0], item, f"{key}[{i}]") for i, item in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_read_value(a, item, f"{key}[{i}]") for i, (a, item) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(hint):
        return _read_dataclass(hint, value, key)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported schema type {hint}")


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_to_plain(item) for item in value]
    return value
