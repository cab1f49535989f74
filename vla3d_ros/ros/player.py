"""Playing observations into the graph in sim time: shared by the sim bridge and `vla3d replay`.

`ObservationPublisher` publishes one `Observation` on the topics of a runtime config: per camera
color (rgb8), CameraInfo and depth (in the camera's configured encoding), JointState, the gripper
opening, the instruction (when it changes), and the transforms base <- camera optical frame and
base <- ee_frame at the observation's stamp.

`LockstepPlayer` is a node that owns /clock and steps a `StepSource` (the MuJoCo env, a bag) in
lockstep with the graph, one step at a time, never on a wall-clock schedule:

    publish observation(t)                       (clock still at the previous step)
    if inference is due at t: wait for the ActionChunk stamped t
    publish /clock = t                           (controller timers fire at t)
    if commands are consumed: wait for the controller command stamped >= t
    source.advance(command) -> observation(t + dt)

Every wait has a wall-clock timeout (the graph may be dead): the step then proceeds without the
answer and the timeout is counted and logged. Slow is not dead: an answer that became ready while
a slow callback held the executor is taken before the timeout is declared. Stamps are shifted so the clock only moves forward
across episodes (a gap of `episode_gap` seconds between them expires old chunks).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import rosgraph_msgs.msg
from geometry_msgs.msg import TwistStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64, String

import vla3d_ros.msg
from vla3d_ros.ros import conversions
from vla3d_ros.ros import topics
from vla3d_ros.ros.qos import RELIABLE_QOS
from vla3d_ros.runtime.calibration import CameraCalibration
from vla3d_ros.runtime.config import RuntimeConfig
from vla3d_ros.runtime.safety import TwistCommand
from vla3d_ros.types import Observation

_EPS = 1e-6


class TransformSink(Protocol):
    def set_transform(self, parent: str, child: str, T_parent_child: np.ndarray, stamp: float | None) -> None: ...


class ObservationPublisher:
    """Publishes observations on a config's topics (see the module docstring)."""

    def __init__(self, node: Node, config: RuntimeConfig, transforms: TransformSink) -> None:
        self.node = node
        self.config = config
        self.transforms = transforms
        self._camera_publishers = {}
        for camera in config.cameras:
            self._camera_publishers[camera.name] = (
                node.create_publisher(Image, camera.topics.color, RELIABLE_QOS),
                node.create_publisher(CameraInfo, camera.topics.camera_info, RELIABLE_QOS),
                node.create_publisher(Image, camera.topics.depth, RELIABLE_QOS) if camera.has_depth else None,
            )
        self._joint_publisher = node.create_publisher(JointState, config.joint_state_topic, RELIABLE_QOS)
        self._gripper_publisher = node.create_publisher(Float64, topics.GRIPPER_OPENING, RELIABLE_QOS)
        self._instruction_publisher = node.create_publisher(String, config.instruction_topic, RELIABLE_QOS)
        self._instruction: str | None = None

    def publish(self, obs: Observation) -> None:
        stamp = obs.stamp
        missing = [name for name in self.config.camera_names if name not in obs.camera_names]
        if missing:
            raise ValueError(f"observation has cameras {obs.camera_names}, the config needs {missing} too")
        # Transforms first: the in-process cache is written synchronously, so whoever receives the
        # images below finds the poses of exactly this stamp.
        base = self.config.base_frame
        for camera in self.config.cameras:
            self.transforms.set_transform(base, camera.frame_id, obs.T_base_cam[obs.camera_names.index(camera.name)],
                                          stamp)
        if self.config.ee_frame:
            self.transforms.set_transform(base, self.config.ee_frame, conversions.pose_to_matrix(obs.ee_pose), stamp)
        if obs.instruction and obs.instruction != self._instruction:
            self._instruction_publisher.publish(String(data=obs.instruction))
            self._instruction = obs.instruction
        self._joint_publisher.publish(conversions.arrays_to_joint_state(obs.joint_names or tuple(
            f"joint{i}" for i in range(len(obs.joint_positions))), obs.joint_positions, stamp=stamp))
        self._gripper_publisher.publish(Float64(data=float(obs.gripper)))
        height, width = obs.rgb.shape[1:3]
        for camera in self.config.cameras:
            view = obs.camera_names.index(camera.name)
            color, info, depth = self._camera_publishers[camera.name]
            calibration = CameraCalibration(K=obs.intrinsics[view], width=width, height=height)
            info.publish(conversions.calibration_to_camera_info(calibration, stamp=stamp, frame_id=camera.frame_id))
            if depth is not None and obs.depth is not None:
                depth.publish(conversions.depth_to_image(obs.depth[view], camera.depth_encoding, stamp=stamp,
                                                         frame_id=camera.frame_id))
            color.publish(conversions.array_to_image(obs.rgb[view], "rgb8", stamp=stamp, frame_id=camera.frame_id))

    def destroy(self) -> None:
        for publishers in self._camera_publishers.values():
            for publisher in publishers:
                if publisher is not None:
                    self.node.destroy_publisher(publisher)
        for publisher in (self._joint_publisher, self._gripper_publisher, self._instruction_publisher):
            self.node.destroy_publisher(publisher)


@dataclass
class StepCommand:
    """The controller's answer for one step (what the arm would be told to do)."""

    twist: TwistCommand | None = None
    gripper: float | None = None        # opening target in [0, 1], None = unchanged


class StepSource(Protocol):
    """Observations to play: episodes of steps."""

    def reset(self) -> Observation | None:
        """First observation of the next episode, None when there are no more episodes."""

    def advance(self, command: StepCommand) -> Observation | None:
        """Next observation of this episode given the controller's command; None = episode over."""


@dataclass
class PlayerStats:
    steps: int = 0
    episodes: int = 0
    chunk_timeouts: int = 0
    command_timeouts: int = 0
    chunks: list[float] = field(default_factory=list)    # stamps of the chunks received


class LockstepPlayer(Node):
    """Plays a `StepSource` through the graph in lockstep (see the module docstring).

    Args:
        inference_period: s of stamp time between inference runs (the inference node's rate).
        consume_commands: wait for and pass on the controller's commands (closed loop, sim);
            False for open-loop replay.
        timeout: wall seconds to wait for an answer before stepping on without it.
        transforms: node -> where the observation's transforms go (`NodeGraph.transform_sink`:
            the in-process TransformCache, or a tf2 broadcaster on this node).
    """

    def __init__(self, config: RuntimeConfig, source: StepSource, transforms: Callable[[Node], TransformSink], *,
                 inference_period: float, consume_commands: bool, timeout: float = 30.0,
                 episode_gap: float | None = None, context=None, name: str = "vla3d_player",
                 on_episode_end: Callable[[int], None] | None = None) -> None:
        super().__init__(name, context=context)  # wall time: the player *makes* sim time
        self.config = config
        self.source = source
        self.inference_period = inference_period
        self.consume_commands = consume_commands
        self.timeout = timeout
        self.episode_gap = config.executor.max_chunk_age + 1.0 if episode_gap is None else episode_gap
        self.on_episode_end = on_episode_end
        self.stats = PlayerStats()
        self.finished = False
        self.observations = ObservationPublisher(self, config, transforms(self))
        self._clock_publisher = self.create_publisher(rosgraph_msgs.msg.Clock, topics.CLOCK, RELIABLE_QOS)
        self.create_subscription(vla3d_ros.msg.ActionChunk, topics.ACTION_CHUNK, self._on_chunk, RELIABLE_QOS)
        if consume_commands:
            if config.output.adapter != "servo":
                raise ValueError("the simulator takes end-effector deltas: output.adapter must be 'servo', "
                                 f"got {config.output.adapter!r}")
            # Gripper before twist: the action node publishes the gripper target first, and an
            # executor serves one wait's messages in subscription order, so the step the twist
            # triggers carries this step's gripper target.
            if config.output.gripper_topic:
                self.create_subscription(Float64, config.output.gripper_topic, self._on_gripper, RELIABLE_QOS)
            self.create_subscription(TwistStamped, config.output.servo.topic, self._on_twist, RELIABLE_QOS)
        self._offset = 1.0        # stamps start at 1 s: ROS treats time 0 as "unset"
        self.offsets: list[float] = []   # stamp shift of each episode (played = source + offset)
        self._t = 0.0             # current step's stamp (shifted)
        self._last_inference: float | None = None
        self._phase = "idle"
        self._deadline = 0.0
        self._overdue = False
        self._gripper: float | None = None
        self._newest_chunk = -np.inf
        self._twist: TwistCommand | None = None
        self._watchdog = self.create_timer(0.05, self._check_deadline, clock=Clock(clock_type=ClockType.STEADY_TIME))

    # ---- driving ----------------------------------------------------------------------------

    def start(self) -> None:
        self._start_episode()

    def _start_episode(self) -> None:
        obs = self.source.reset()
        if obs is None:
            self.finished = True
            self._phase = "done"
            return
        self._offset = self._t + self.episode_gap if self.stats.steps else self._offset
        self.offsets.append(self._offset)
        self._last_inference = None
        self._publish_step(obs)

    def _publish_step(self, obs: Observation) -> None:
        obs = dataclasses.replace(obs, stamp=obs.stamp + self._offset)
        self._t = obs.stamp
        self.stats.steps += 1
        self._twist = None
        self.observations.publish(obs)
        due = self._last_inference is None or self._t >= self._last_inference + self.inference_period - _EPS
        if due:
            self._last_inference = self._t
            self._wait("chunk")
            if self._newest_chunk >= self._t - _EPS:
                self._publish_clock()
        else:
            self._publish_clock()

    def _wait(self, phase: str) -> None:
        self._phase = phase
        self._deadline = time.monotonic() + self.timeout
        self._overdue = False

    def _publish_clock(self) -> None:
        self._clock_publisher.publish(rosgraph_msgs.msg.Clock(clock=conversions.seconds_to_time(self._t)))
        if self.consume_commands:
            self._wait("command")
            if self._twist is not None and self._twist.stamp >= self._t - _EPS:
                self._advance()
        else:
            self._advance()

    def _advance(self) -> None:
        self._phase = "stepping"
        command = StepCommand(self._twist, self._gripper)
        obs = self.source.advance(command)
        if obs is None:
            self.stats.episodes += 1
            if self.on_episode_end is not None:
                self.on_episode_end(self.stats.episodes)
            self._start_episode()
        else:
            self._publish_step(obs)

    # ---- answers ----------------------------------------------------------------------------

    def _on_chunk(self, msg: vla3d_ros.msg.ActionChunk) -> None:
        stamp = conversions.time_to_seconds(msg.header.stamp)
        self.stats.chunks.append(stamp)
        self._newest_chunk = max(self._newest_chunk, stamp)
        if self._phase == "chunk" and stamp >= self._t - _EPS:
            self._publish_clock()

    def _on_twist(self, msg: TwistStamped) -> None:
        command = conversions.msg_to_twist_command(msg)
        if command.stamp >= self._t - _EPS:
            self._twist = command
            if self._phase == "command":
                self._advance()

    def _on_gripper(self, msg: Float64) -> None:
        self._gripper = float(msg.data)

    def _check_deadline(self) -> None:
        if self._phase not in ("chunk", "command") or time.monotonic() < self._deadline:
            return
        if not self._overdue:
            # An answer that took longer than the timeout may be waiting to be taken right now: a
            # single-threaded executor hands out this timer before the subscriptions that became
            # ready during the slow callback. Slow is not dead: let them in first.
            self._overdue = True
            return
        self.get_logger().warning(f"no {self._phase} for t={self._t:.3f} within {self.timeout} s: stepping on")
        if self._phase == "chunk":
            self.stats.chunk_timeouts += 1
            self._publish_clock()
        else:
            self.stats.command_timeouts += 1
            self._advance()
