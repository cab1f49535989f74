"""Safety: every fault HOLDS the arm (zero twist / current joints) and says why."""
from __future__ import annotations

import numpy as np
import pytest

from vla3d_ros.geometry import euler_xyz_to_matrix
from vla3d_ros.runtime.chunk_executor import ChunkExecutor
from vla3d_ros.runtime.safety import (
    JointTargetCommand,
    SafeActionController,
    SafetyFilter,
    SafetyLimits,
    TwistCommand,
    rotation_vector,
)
from vla3d_ros.types import EE_DELTA_ACTION_NAMES, ActionChunk

LIMITS = SafetyLimits(workspace_min=[0.2, -0.5, 0.0], workspace_max=[0.9, 0.5, 0.8], max_linear_speed=0.5,
                      max_angular_speed=2.0, max_joint_step=0.05)
EE = np.array([0.5, 0.0, 0.4])
PERIOD = 0.1


def make_controller(**kwargs) -> SafeActionController:
    options = dict(frame_id="base", observation_timeout=0.5, command_timeout=0.1, dry_run=False)
    options.update(kwargs)
    return SafeActionController(LIMITS, ChunkExecutor(ensemble_coeff=None, max_chunk_age=2.0), **options)


def ee_chunk(row, stamp=0.0, horizon=10) -> ActionChunk:
    return ActionChunk(np.tile(np.asarray(row, np.float32), (horizon, 1)), EE_DELTA_ACTION_NAMES, PERIOD, stamp)


SMALL = [0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]  # 0.1 m/s along x, gripper open


def armed_controller(**kwargs) -> SafeActionController:
    controller = make_controller(**kwargs)
    assert controller.state.arm()[0]
    return controller


def assert_holds(decision, reason_part):
    assert decision.held, decision
    assert isinstance(decision.command, TwistCommand) and decision.command.is_zero
    assert decision.gripper is None
    assert reason_part in decision.reason, decision.reason


def test_normal_row_moves_with_the_commanded_velocity():
    controller = armed_controller()
    assert controller.add_chunk(ee_chunk(SMALL)) is None
    decision = controller.step(0.05, EE)
    assert not decision.held and decision.send_to_controller
    np.testing.assert_allclose(decision.command.linear, [0.1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(decision.command.angular, 0, atol=1e-12)
    assert decision.command.frame_id == "base" and decision.gripper.position == 1.0


def test_starts_disarmed_and_in_dry_run_by_default():
    controller = SafeActionController(LIMITS, ChunkExecutor(), frame_id="base")
    controller.add_chunk(ee_chunk(SMALL))
    decision = controller.step(0.05, EE)
    assert_holds(decision, "disarmed")
    assert "dry-run" in decision.reason and not decision.send_to_controller
    assert decision.proposed is not None and not decision.proposed.is_zero  # shown, never sent


def test_disarmed_holds():
    controller = make_controller()
    controller.add_chunk(ee_chunk(SMALL))
    assert_holds(controller.step(0.05, EE), "disarmed")


def test_nan_and_inf_actions_hold():
    controller = armed_controller()
    bad = ActionChunk(np.tile(np.float32(SMALL), (10, 1)), EE_DELTA_ACTION_NAMES, PERIOD, 0.0)
    bad.actions[:, 1] = np.nan
    assert "non-finite" in controller.add_chunk(bad)
    assert_holds(controller.step(0.05, EE), "command timeout")
    # Even if a non-finite row reaches the filter directly, it refuses it.
    command, reasons = SafetyFilter(LIMITS).filter_ee_delta(np.array([np.inf, 0, 0, 0, 0, 0.0]), EE, PERIOD, "b", 0)
    assert command is None and "non-finite" in reasons[0]
    assert "non-finite" in controller.add_chunk(ee_chunk(SMALL[:6] + [float("inf")]))
    assert_holds(controller.step(0.05, EE), "command timeout")


def test_out_of_workspace_target_is_clipped_or_rejected():
    far = [5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]  # 5 m outside the box
    clip = armed_controller()
    clip.add_chunk(ee_chunk(far))
    decision = clip.step(0.05, EE)
    assert not decision.held and "clipped to workspace" in decision.reason
    # Target clipped to x = 0.9 (0.4 m away), then the speed limited to 0.5 m/s.
    np.testing.assert_allclose(decision.command.linear, [0.5, 0, 0], atol=1e-9)
    reject = SafeActionController(SafetyLimits(LIMITS.workspace_min, LIMITS.workspace_max, "reject"),
                                  ChunkExecutor(None), frame_id="base", dry_run=False)
    reject.state.arm()
    reject.add_chunk(ee_chunk(far))
    assert_holds(reject.step(0.05, EE), "outside workspace")


def test_over_speed_is_scaled_down_keeping_direction():
    controller = armed_controller()
    controller.add_chunk(ee_chunk([0.03, 0.04, 0.0, 0.0, 0.0, 0.5, 0.0]))  # 0.5 m/s ok, 5 rad/s too fast
    decision = controller.step(0.0, EE)
    np.testing.assert_allclose(decision.command.linear, [0.3, 0.4, 0.0], atol=1e-6)
    np.testing.assert_allclose(decision.command.angular, [0, 0, 2.0], atol=1e-6)
    assert "angular speed 5.000 scaled to 2.0" in decision.reason
    fast = armed_controller()
    fast.add_chunk(ee_chunk([0.06, 0.08, 0.0, 0.0, 0.0, 0.0, 0.0]))  # 1 m/s -> 0.5 m/s
    np.testing.assert_allclose(fast.step(0.0, EE).command.linear, [0.3, 0.4, 0.0], atol=1e-6)


def test_stale_observation_holds():
    controller = armed_controller(observation_timeout=0.3)
    controller.add_chunk(ee_chunk(SMALL, stamp=0.0, horizon=20))
    assert not controller.step(0.25, EE).held
    assert_holds(controller.step(0.35, EE), "stale observation")


def test_command_timeout_bridges_short_gaps_then_holds():
    controller = armed_controller(command_timeout=0.1)
    controller.add_chunk(ee_chunk(SMALL, stamp=0.0, horizon=3))  # rows cover [0, 0.3)
    assert not controller.step(0.25, EE).held
    bridged = controller.step(0.33, EE)  # no row, 0.08 s since the last one: repeat it
    assert not bridged.held and "repeating the last row" in bridged.reason
    assert_holds(controller.step(0.36, EE), "command timeout")
    assert controller.command_watchdog.trips == 1


def test_no_chunk_at_all_holds():
    assert_holds(armed_controller().step(0.0, EE), "command timeout")


def test_estop_latches_until_reset_and_reset_leaves_disarmed():
    controller = armed_controller()
    controller.add_chunk(ee_chunk(SMALL, horizon=50))
    controller.state.trigger_estop("operator pressed e-stop")
    assert_holds(controller.step(0.05, EE), "e-stop latched")
    ok, message = controller.state.arm()
    assert not ok and "reset it first" in message
    controller.state.reset_estop()
    assert_holds(controller.step(0.1, EE), "disarmed")
    assert controller.state.arm()[0]
    assert not controller.step(0.15, EE).held


def test_unknown_ee_pose_holds():
    controller = armed_controller()
    controller.add_chunk(ee_chunk(SMALL))
    assert_holds(controller.step(0.0, None), "end-effector position unknown")
    assert_holds(controller.step(0.0, np.array([np.nan, 0, 0])), "end-effector position unknown")


def test_clock_jump_back_holds():
    controller = armed_controller()
    controller.add_chunk(ee_chunk(SMALL, stamp=100.0))
    assert not controller.step(100.05, EE).held
    assert_holds(controller.step(1.0, EE), "command timeout")


def test_wrong_chunk_dimensions_are_refused():
    controller = armed_controller()
    chunk = ActionChunk(np.zeros((4, 2), np.float32), ("a", "b"), PERIOD, 0.0)
    assert "do not match the servo adapter" in controller.add_chunk(chunk)


# ---- ros2_control joint targets ------------------------------------------------------------------

JOINTS = ("j1", "j2", "j3")


def joint_controller(**kwargs):
    controller = make_controller(adapter="ros2_control", joint_names=JOINTS, **kwargs)
    controller.state.arm()
    return controller


def test_joint_step_is_limited_uniformly():
    controller = joint_controller()
    current = np.array([0.0, 0.5, -0.2])
    target = current + np.array([0.2, -0.1, 0.0])
    chunk = ActionChunk(np.tile(np.r_[target, 0.0].astype(np.float32), (5, 1)), JOINTS + ("gripper",), PERIOD, 0.0)
    assert controller.add_chunk(chunk) is None
    decision = controller.step(0.0, joint_positions=current)
    assert isinstance(decision.command, JointTargetCommand) and not decision.held
    np.testing.assert_allclose(decision.command.positions - current, [0.05, -0.025, 0.0], atol=1e-6)
    assert decision.command.joint_names == JOINTS


def test_joint_holds_are_current_positions_or_a_stop():
    controller = joint_controller()
    current = np.array([0.1, 0.2, 0.3])
    chunk = ActionChunk(np.full((5, 3), np.nan, np.float32), JOINTS, PERIOD, 0.0)
    assert controller.add_chunk(chunk) is not None
    decision = controller.step(0.0, joint_positions=current)
    assert decision.held and np.array_equal(decision.command.positions, current)
    unknown = controller.step(0.0, joint_positions=None)
    assert unknown.held and unknown.command.is_stop


# ---- helpers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("rpy", [(0.3, -0.2, 0.1), (0.0, 0.0, 0.0), (np.pi - 1e-8, 0.0, 0.0), (0.0, 1.2, -2.0)])
def test_rotation_vector_inverts_axis_angle(rpy):
    R = euler_xyz_to_matrix(*rpy)
    vector = rotation_vector(R)
    angle = np.linalg.norm(vector)
    assert angle <= np.pi + 1e-9
    if angle > 0:
        axis = vector / angle
        K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rebuilt = np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K
        np.testing.assert_allclose(rebuilt, R, atol=1e-6)
