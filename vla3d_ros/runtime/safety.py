"""The safety layer between the policy's action chunks and the robot's controllers.

Three parts:
- `SafetyState`: armed / disarmed (starts DISARMED), dry-run (starts ON by default), and a latched
  e-stop that only an explicit `reset_estop()` clears (and that leaves the arm disarmed).
- `SafetyFilter`: per-command limits. End-effector delta actions (dx, dy, dz, droll, dpitch,
  dyaw, gripper; base frame, per step) become a `TwistCommand` for MoveIt Servo: the target
  position is clipped into (or, mode "reject", must lie inside) the workspace box, and linear and
  angular speed are scaled down uniformly to their maxima (direction kept). Joint-position
  actions become a `JointTargetCommand` for ros2_control with the per-step change scaled to
  `max_joint_step`. Any NaN / inf holds.
- `SafeActionController`: the whole control step the action node runs at the controller rate:
  chunk executor -> command timeout -> stale-observation watchdog -> arm / e-stop / dry-run
  gate -> filter. Every outcome is a `SafetyDecision` whose `command` is always safe to send
  (HOLD = zero twist, or the current joint positions) and whose `reasons` say why, for
  /diagnostics and the log.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from vla3d_ros.geometry import euler_xyz_to_matrix
from vla3d_ros.runtime.chunk_executor import ChunkExecutor, ExecutedAction
from vla3d_ros.runtime.diagnostics import Level, Status
from vla3d_ros.runtime.watchdog import CommandTimeoutWatchdog, StaleObservationWatchdog
from vla3d_ros.types import EE_DELTA_ACTION_NAMES, ActionChunk

GRIPPER = "gripper"


# ---- output commands ----------------------------------------------------------------------------

@dataclass(frozen=True)
class TwistCommand:
    """Cartesian velocity for MoveIt Servo (geometry_msgs/TwistStamped)."""

    linear: np.ndarray       # (3,) m/s
    angular: np.ndarray      # (3,) rad/s
    frame_id: str
    stamp: float

    @classmethod
    def zero(cls, frame_id: str, stamp: float) -> "TwistCommand":
        return cls(np.zeros(3), np.zeros(3), frame_id, stamp)

    @property
    def is_zero(self) -> bool:
        return not np.any(self.linear) and not np.any(self.angular)


@dataclass(frozen=True)
class JointTargetCommand:
    """One-point joint trajectory for ros2_control's joint_trajectory_controller.

    `positions` empty = an empty trajectory, which makes the controller stop and hold its
    current position (used to hold when the joint state is unknown).
    """

    joint_names: tuple[str, ...]
    positions: np.ndarray    # (J,) or (0,)
    time_from_start: float
    stamp: float

    @property
    def is_stop(self) -> bool:
        return self.positions.size == 0


@dataclass(frozen=True)
class GripperCommand:
    position: float          # [0, 1], 1 = open
    stamp: float


@dataclass(frozen=True)
class SafetyDecision:
    """Outcome of one control step.

    command: what to send to the controller now; always safe (a HOLD when `held`).
    proposed: the filtered command the policy asked for, before the arm / dry-run gate
        (None if the action itself was unusable); for the dry-run topic and RViz.
    gripper: gripper command to send, None = leave the gripper as it is.
    send_to_controller: False in dry-run: nothing may reach the controllers.
    """

    command: TwistCommand | JointTargetCommand
    held: bool
    reasons: tuple[str, ...]
    proposed: TwistCommand | JointTargetCommand | None = None
    gripper: GripperCommand | None = None
    send_to_controller: bool = True

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "ok"


# ---- state --------------------------------------------------------------------------------------

class SafetyState:
    """Arm / dry-run / e-stop state. Starts disarmed; the e-stop latches until reset."""

    def __init__(self, dry_run: bool = True) -> None:
        self.armed = False
        self.dry_run = dry_run
        self.estop_latched = False
        self.estop_reason = ""

    def arm(self) -> tuple[bool, str]:
        if self.estop_latched:
            return False, f"refusing to arm: e-stop latched ({self.estop_reason}); reset it first"
        self.armed = True
        return True, "armed" + (" (dry-run: commands are not sent)" if self.dry_run else "")

    def disarm(self) -> tuple[bool, str]:
        self.armed = False
        return True, "disarmed"

    def set_dry_run(self, enabled: bool) -> tuple[bool, str]:
        self.dry_run = bool(enabled)
        return True, f"dry-run {'on' if self.dry_run else 'off'}"

    def trigger_estop(self, reason: str = "e-stop") -> None:
        self.estop_latched = True
        self.estop_reason = reason
        self.armed = False

    def reset_estop(self) -> tuple[bool, str]:
        was = self.estop_latched
        self.estop_latched = False
        self.estop_reason = ""
        return True, "e-stop reset; still disarmed" if was else "e-stop was not latched"

    def motion_permitted(self) -> tuple[bool, str]:
        if self.estop_latched:
            return False, f"e-stop latched ({self.estop_reason})"
        if not self.armed:
            return False, "disarmed"
        return True, "armed"

    def status(self) -> Status:
        values = {"armed": str(self.armed), "dry_run": str(self.dry_run), "estop_latched": str(self.estop_latched)}
        if self.estop_latched:
            return Status("safety", Level.ERROR, f"e-stop latched: {self.estop_reason}", values)
        if not self.armed:
            return Status("safety", Level.WARN, "disarmed: holding", values)
        return Status("safety", Level.OK, "armed, dry-run" if self.dry_run else "armed", values)


# ---- limits -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SafetyLimits:
    workspace_min: np.ndarray = field(default_factory=lambda: np.array([-1.0, -1.0, 0.0]))
    workspace_max: np.ndarray = field(default_factory=lambda: np.array([1.0, 1.0, 1.0]))
    workspace_mode: str = "clip"     # "clip" | "reject"
    max_linear_speed: float = 0.25   # m/s
    max_angular_speed: float = 1.0   # rad/s
    max_joint_step: float = 0.05     # rad per command

    def __post_init__(self) -> None:
        object.__setattr__(self, "workspace_min", np.asarray(self.workspace_min, np.float64))
        object.__setattr__(self, "workspace_max", np.asarray(self.workspace_max, np.float64))
        if not np.all(self.workspace_min < self.workspace_max):
            raise ValueError(f"workspace min {self.workspace_min} must be < max {self.workspace_max}")
        if self.workspace_mode not in ("clip", "reject"):
            raise ValueError(f"workspace_mode must be 'clip' or 'reject', got {self.workspace_mode!r}")
        for name in ("max_linear_speed", "max_angular_speed", "max_joint_step"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @classmethod
    def from_config(cls, safety) -> "SafetyLimits":
        """From a `config.SafetyConfig`."""
        return cls(np.array(safety.workspace.min), np.array(safety.workspace.max), safety.workspace.mode,
                   safety.max_linear_speed, safety.max_angular_speed, safety.max_joint_step)


def accepted_dimensions(adapter: str, joint_names: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """The chunk layouts an output adapter executes, the preferred first: MoveIt Servo the
    end-effector deltas; ros2_control its joints, with or without the gripper."""
    if adapter == "servo":
        return (EE_DELTA_ACTION_NAMES,)
    return (tuple(joint_names) + (GRIPPER,), tuple(joint_names))


def rotation_vector(R: np.ndarray) -> np.ndarray:
    """(3,) axis * angle of rotation matrix R (angle in [0, pi])."""
    cos_angle = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    angle = float(np.arccos(cos_angle))
    if angle < 1e-9:
        return np.zeros(3)
    if np.pi - angle < 1e-6:
        # Near pi the antisymmetric part vanishes; the axis is the dominant column of R + I.
        M = (R + np.eye(3)) / 2.0
        axis = M[:, int(np.argmax(np.diag(M)))]
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2.0 * np.sin(angle))
    return axis * angle


def _finite(*arrays) -> bool:
    return all(a is not None and np.all(np.isfinite(a)) for a in arrays)


class SafetyFilter:
    """Turns one action row into a limited controller command, or refuses it (None + reasons)."""

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits

    def filter_ee_delta(self, delta: np.ndarray, ee_position: np.ndarray | None, step_period: float,
                        frame_id: str, stamp: float) -> tuple[TwistCommand | None, list[str]]:
        """(dx, dy, dz, droll, dpitch, dyaw) per step in the base frame -> limited twist.

        Returns (None, reasons) when the action must not be executed.
        """
        delta = np.asarray(delta, np.float64)
        if delta.shape != (6,) or not _finite(delta):
            return None, [f"non-finite or malformed end-effector delta {delta.tolist()}"]
        if not _finite(ee_position) or np.shape(ee_position) != (3,):
            return None, ["end-effector position unknown or non-finite"]
        reasons = []
        limits = self.limits
        target = ee_position + delta[:3]
        inside = np.all((target >= limits.workspace_min) & (target <= limits.workspace_max))
        if not inside:
            if limits.workspace_mode == "reject":
                return None, [f"target {np.round(target, 3).tolist()} outside workspace "
                              f"{limits.workspace_min.tolist()}..{limits.workspace_max.tolist()}"]
            target = np.clip(target, limits.workspace_min, limits.workspace_max)
            reasons.append(f"target clipped to workspace at {np.round(target, 3).tolist()}")
        linear = (target - ee_position) / step_period
        angular = rotation_vector(euler_xyz_to_matrix(*delta[3:6])) / step_period
        for name, vector, limit in (("linear", linear, limits.max_linear_speed),
                                    ("angular", angular, limits.max_angular_speed)):
            speed = float(np.linalg.norm(vector))
            if speed > limit:
                vector *= limit / speed
                reasons.append(f"{name} speed {speed:.3f} scaled to {limit}")
        return TwistCommand(linear, angular, frame_id, stamp), reasons

    def filter_joint_target(self, target: np.ndarray, current: np.ndarray | None, joint_names: Sequence[str],
                            time_from_start: float, stamp: float) -> tuple[JointTargetCommand | None, list[str]]:
        """Absolute joint target -> target at most `max_joint_step` away from `current`."""
        target = np.asarray(target, np.float64)
        if not _finite(target) or target.shape != (len(joint_names),):
            return None, [f"non-finite or malformed joint target {target.tolist()}"]
        if not _finite(current) or np.shape(current) != target.shape:
            return None, ["current joint positions unknown or non-finite"]
        step = target - current
        largest = float(np.max(np.abs(step))) if step.size else 0.0
        reasons = []
        if largest > self.limits.max_joint_step:
            step *= self.limits.max_joint_step / largest
            reasons.append(f"joint step {largest:.4f} scaled to {self.limits.max_joint_step}")
        return JointTargetCommand(tuple(joint_names), current + step, time_from_start, stamp), reasons


# ---- the control step ---------------------------------------------------------------------------

class SafeActionController:
    """Executor + watchdogs + arm gate + filter: one `step(now, ...)` per controller tick.

    Args:
        adapter: "servo" (EE-delta chunks -> TwistCommand) or "ros2_control" (joint-position chunks
            whose dimension names are `joint_names` [+ "gripper"] -> JointTargetCommand).
        frame_id: frame of the twist (the base frame).
        observation_timeout: s, max age of the observation behind the executed row.
        command_timeout: s a missing row is bridged by repeating the last one; then HOLD.
    """

    def __init__(self, limits: SafetyLimits, executor: ChunkExecutor, adapter: str = "servo", frame_id: str = "",
                 joint_names: Sequence[str] = (), time_from_start: float = 0.1, observation_timeout: float = 0.5,
                 command_timeout: float = 0.1, dry_run: bool = True) -> None:
        if adapter not in ("servo", "ros2_control"):
            raise ValueError(f"adapter must be 'servo' or 'ros2_control', got {adapter!r}")
        if adapter == "ros2_control" and not joint_names:
            raise ValueError("the ros2_control adapter needs joint_names")
        self.adapter = adapter
        self.frame_id = frame_id
        self.joint_names = tuple(joint_names)
        self.time_from_start = time_from_start
        self.filter = SafetyFilter(limits)
        self.executor = executor
        self.state = SafetyState(dry_run=dry_run)
        self.observation_watchdog = StaleObservationWatchdog(observation_timeout)
        self.command_watchdog = CommandTimeoutWatchdog(command_timeout)
        self._last_row: ExecutedAction | None = None
        self.holds = 0
        self.steps = 0
        self.last_decision: SafetyDecision | None = None

    @classmethod
    def from_config(cls, config) -> "SafeActionController":
        """From a `config.RuntimeConfig`."""
        output = config.output
        return cls(
            SafetyLimits.from_config(config.safety),
            ChunkExecutor(config.executor.temporal_ensemble_coeff, config.executor.max_chunk_age),
            adapter=output.adapter,
            frame_id=output.servo.frame_id or config.base_frame,
            joint_names=output.ros2_control.joint_names,
            time_from_start=output.ros2_control.time_from_start,
            observation_timeout=config.watchdog.observation_timeout,
            command_timeout=config.watchdog.command_timeout,
            dry_run=config.safety.start_in_dry_run,
        )

    def add_chunk(self, chunk: ActionChunk) -> str | None:
        """Queue a chunk from the policy; returns None if accepted, else why it was refused."""
        names = tuple(chunk.dimension_names)
        accepted = accepted_dimensions(self.adapter, self.joint_names)
        if names not in accepted:
            return f"chunk dimensions {names} do not match the {self.adapter} adapter's {accepted[0]}"
        return self.executor.add(chunk)

    def _hold(self, now: float, current_joints: np.ndarray | None) -> TwistCommand | JointTargetCommand:
        if self.adapter == "servo":
            return TwistCommand.zero(self.frame_id, now)
        positions = np.asarray(current_joints, np.float64) if _finite(current_joints) and \
            np.shape(current_joints) == (len(self.joint_names),) else np.zeros(0)
        return JointTargetCommand(self.joint_names, positions, self.time_from_start, now)

    def step(self, now: float, ee_position: np.ndarray | None = None,
             joint_positions: np.ndarray | None = None) -> SafetyDecision:
        """One controller tick at time `now` given the current EE position (3,) / joints (J,)."""
        self.steps += 1
        decision = self._decide(now, ee_position, joint_positions)
        self.holds += int(decision.held)
        self.last_decision = decision
        return decision

    def _decide(self, now, ee_position, joint_positions) -> SafetyDecision:
        send = not self.state.dry_run
        hold = self._hold(now, joint_positions)
        reasons = ["dry-run"] if self.state.dry_run else []

        def held(*why: str, proposed=None) -> SafetyDecision:
            return SafetyDecision(hold, True, tuple(reasons) + why, proposed, None, send)

        row = self.executor.action_at(now)
        if row is not None:
            self.command_watchdog.feed(now)
            self._last_row = row
        else:
            timeout = self.command_watchdog.check(now)
            if not timeout.ok or self._last_row is None:
                return held(f"command timeout: no live chunk row ({timeout.reason})")
            row = self._last_row
            reasons.append("repeating the last row")
        self.observation_watchdog.observe(row.observation_stamp)
        fresh = self.observation_watchdog.check(now)
        if not fresh.ok:
            return held(f"stale observation: {fresh.reason}")

        values = dict(zip(row.dimension_names, row.action))
        if self.adapter == "servo":
            delta = np.array([values[name] for name in EE_DELTA_ACTION_NAMES[:6]])
            proposed, why = self.filter.filter_ee_delta(delta, ee_position, row.step_period, self.frame_id, now)
        else:
            target = np.array([values[name] for name in self.joint_names])
            proposed, why = self.filter.filter_joint_target(target, joint_positions, self.joint_names,
                                                            self.time_from_start, now)
        if proposed is None:
            return held(*why)
        reasons += why
        # Rows are finite: the executor refuses chunks with any non-finite value.
        gripper = GripperCommand(float(np.clip(values[GRIPPER], 0.0, 1.0)), now) if GRIPPER in values else None
        permitted, why_not = self.state.motion_permitted()
        if not permitted or self.state.dry_run:
            return held(*([] if permitted else [why_not]), proposed=proposed)
        return SafetyDecision(proposed, False, tuple(reasons), proposed, gripper, send)

    def status(self, now: float) -> Status:
        """Summary for /diagnostics: the state plus the last decision's reasons."""
        state = self.state.status()
        values = dict(state.values, steps=str(self.steps), holds=str(self.holds),
                      chunks=str(len(self.executor)), chunks_rejected=str(self.executor.rejected))
        decision = self.last_decision
        if state.level != Level.OK or decision is None:
            return Status("action", state.level, state.message, values)
        if decision.held:
            return Status("action", Level.WARN, f"holding: {decision.reason}", values)
        return Status("action", Level.OK, decision.reason, values)
