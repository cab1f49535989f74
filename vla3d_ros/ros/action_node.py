"""action_node: action chunks -> safe controller commands at the controller rate.

Wiring only: every tick calls `runtime.safety.SafeActionController.step` (chunk executor with
temporal ensembling, command timeout, stale-observation watchdog, arm / e-stop / dry-run gate,
workspace / speed / joint-step limits, NaN rejection) and publishes its decision:
- adapter "servo": geometry_msgs/TwistStamped on `output.servo.topic` (MoveIt Servo);
- adapter "ros2_control": trajectory_msgs/JointTrajectory on `output.ros2_control.topic`;
- the gripper target (std_msgs/Float64 in [0, 1]) on `output.gripper_topic`.
A held decision publishes the hold itself (zero twist / current joint positions / an empty
trajectory), so a controller with a command timeout sees a stream of explicit stops.
In dry-run nothing reaches the controllers: the command the policy would send goes to
`topics.DRY_RUN_COMMANDS` / `DRY_RUN_TRAJECTORY` instead.

The node starts DISARMED and (unless `safety.start_in_dry_run` is false) in dry-run.
Services: `~/arm` (std_srvs/SetBool: true arms, false disarms), `~/dry_run` (SetBool),
`~/reset_estop` (std_srvs/Trigger). Topic `estop_topic` (std_msgs/Bool, true = stop) latches
the e-stop. Commands use reliable QoS.
"""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

import vla3d_ros.msg
from vla3d_ros.ros import conversions
from vla3d_ros.ros import topics
from vla3d_ros.ros.common import DiagnosticsPublisher, declare_config, log_at, node_parameters, now_seconds
from vla3d_ros.ros.qos import RELIABLE_QOS, SENSOR_QOS
from vla3d_ros.runtime.calibration import TransformSource
from vla3d_ros.runtime.config import RuntimeConfig
from vla3d_ros.runtime.diagnostics import EventLog, Level, Status
from vla3d_ros.runtime.safety import SafeActionController, SafetyDecision, TwistCommand


class ActionNode(Node):
    """See the module docstring.

    Args:
        config: the runtime config (rates, watchdog, safety, executor, output); None = the file
            named by the read-only `config` parameter (`common.declare_config`).
        transforms: source of the end-effector pose (TF base_frame <- ee_frame), needed by the
            servo adapter's workspace check; without it every command is held.
    """

    def __init__(self, config: RuntimeConfig | None = None, *, transforms: TransformSource | None = None,
                 use_sim_time: bool = False, context=None, name: str = "vla3d_action") -> None:
        super().__init__(name, context=context, parameter_overrides=node_parameters(use_sim_time))
        self.config = config = declare_config(self, config)
        self.transforms = transforms
        self.controller = SafeActionController.from_config(config)
        self.events = EventLog()
        self._joint_positions: dict[str, float] = {}
        output = config.output
        if output.adapter == "servo":
            self.command_publisher = self.create_publisher(TwistStamped, output.servo.topic, RELIABLE_QOS)
            self.dry_run_publisher = self.create_publisher(TwistStamped, topics.DRY_RUN_COMMANDS, RELIABLE_QOS)
        else:
            self.command_publisher = self.create_publisher(JointTrajectory, output.ros2_control.topic, RELIABLE_QOS)
            self.dry_run_publisher = self.create_publisher(JointTrajectory, topics.DRY_RUN_TRAJECTORY, RELIABLE_QOS)
        self.gripper_publisher = (self.create_publisher(Float64, output.gripper_topic, RELIABLE_QOS)
                                  if output.gripper_topic else None)
        self.create_subscription(vla3d_ros.msg.ActionChunk, topics.ACTION_CHUNK, self._on_chunk, RELIABLE_QOS)
        self.create_subscription(Bool, config.estop_topic, self._on_estop, RELIABLE_QOS)
        self.create_subscription(JointState, config.joint_state_topic, self._on_joint_state, SENSOR_QOS)
        self.create_service(SetBool, "~/arm", self._on_arm)
        self.create_service(SetBool, "~/dry_run", self._on_dry_run)
        self.create_service(Trigger, "~/reset_estop", self._on_reset_estop)
        self.diagnostics = DiagnosticsPublisher(self)
        self.create_timer(1.0 / config.rates.control_hz, self.step)
        self.create_timer(1.0 / config.rates.diagnostics_hz, self.publish_diagnostics)

    # ---- inputs -----------------------------------------------------------------------------

    def _event(self, level: Level, message: str, throttle: float | None = None) -> None:
        """Record for /diagnostics; log when new (held-arm reasons, whose ages change every tick,
        at most every `throttle` seconds)."""
        if self.events.report(now_seconds(self), level, message):
            log_at(self, level, message, throttle)

    def _on_chunk(self, msg: vla3d_ros.msg.ActionChunk) -> None:
        try:
            chunk = conversions.msg_to_action_chunk(msg)
        except ValueError as error:
            self._event(Level.ERROR, f"malformed action chunk refused: {error}")
            return
        refused = self.controller.add_chunk(chunk)
        if refused:
            self._event(Level.WARN, f"action chunk refused: {refused}")

    def _on_estop(self, msg: Bool) -> None:
        if msg.data and not self.controller.state.estop_latched:
            self.controller.state.trigger_estop(f"{self.config.estop_topic} = true")
            self._event(Level.ERROR, f"e-stop latched by {self.config.estop_topic}")

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            names, positions = conversions.joint_state_to_arrays(msg)
        except ValueError as error:
            self._event(Level.ERROR, f"joint state refused: {error}")
            return
        self._joint_positions.update(zip(names, positions.tolist()))

    def _on_arm(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        state = self.controller.state
        response.success, response.message = state.arm() if request.data else state.disarm()
        self.get_logger().info(f"~/arm({request.data}): {response.message}")
        return response

    def _on_dry_run(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        response.success, response.message = self.controller.state.set_dry_run(request.data)
        self.get_logger().info(f"~/dry_run({request.data}): {response.message}")
        return response

    def _on_reset_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.controller.state.reset_estop()
        self.get_logger().info(f"~/reset_estop: {response.message}")
        return response

    # ---- the control tick -------------------------------------------------------------------

    def _ee_position(self) -> np.ndarray | None:
        if self.transforms is None or not self.config.ee_frame:
            return None
        try:
            return self.transforms.lookup_transform(self.config.base_frame, self.config.ee_frame, None)[:3, 3]
        except LookupError:
            return None  # the filter holds and says "end-effector position unknown"

    def _current_joints(self) -> np.ndarray | None:
        names = self.controller.joint_names
        if not names or any(name not in self._joint_positions for name in names):
            return None
        return np.array([self._joint_positions[name] for name in names])

    def _to_msg(self, command):
        return conversions.twist_command_to_msg(command) if isinstance(command, TwistCommand) \
            else conversions.joint_target_to_msg(command)

    def step(self) -> SafetyDecision:
        decision = self.controller.step(now_seconds(self), self._ee_position(), self._current_joints())
        if decision.send_to_controller:
            # Gripper first: a consumer that acts on the arm command (the lockstep simulator steps
            # on it) then already holds this step's gripper target, not the previous one.
            if decision.gripper is not None and self.gripper_publisher is not None:
                self.gripper_publisher.publish(conversions.gripper_command_to_msg(decision.gripper))
            self.command_publisher.publish(self._to_msg(decision.command))
        elif decision.proposed is not None:
            self.dry_run_publisher.publish(self._to_msg(decision.proposed))
        if decision.held and decision.reasons != ("dry-run",):
            self._event(Level.WARN, f"holding: {decision.reason}", throttle=2.0)
        return decision

    def statuses(self) -> list[Status]:
        status = self.controller.status(now_seconds(self))
        recent = self.events.recent()
        if recent:
            status.values["last_event"] = recent[-1][2]
        return [status]

    def publish_diagnostics(self) -> None:
        self.diagnostics.publish(self.statuses())
