"""End-effector delta controller: damped-least-squares differential IK over joint position servos.

One control step takes an action (dx, dy, dz, droll, dpitch, dyaw, gripper) (`EE_DELTA_ACTION_NAMES`):
1. the translation and rotation deltas are clipped to `max_translation` (per axis, metres) and
   `max_rotation` (per axis, radians);
2. the deltas move the COMMANDED tool pose (as MoveIt Servo integrates twists on its command), in the
   base frame: p* = p_cmd + d, R* = R_delta(droll, dpitch, dyaw) @ R_cmd (extrinsic x-y-z,
   `geometry.euler_xyz_to_matrix`). A zero action therefore holds the pose without drift, and the
   servo lag (about one control step) does not shrink motions. The command is pulled back to within
   `max_lead` metres / `max_lead_rotation` radians of the measured pose, so pushing against an obstacle
   cannot wind it up;
3. a few damped-least-squares IK iterations from the previous joint command give the joint goal q*
   (with a small null-space pull towards the home posture, keeping the 7-DoF arm away from limits);
4. the joint servos' set-points are interpolated from the previous joint command to q* over the first
   30 % of the physics substeps and held for the rest;
5. the gripper command u in [0, 1] (1 = open) is the finger set-point 0.04 u metres per finger.
"""
from __future__ import annotations

import mujoco
import numpy as np

from vla3d_ros.geometry import euler_xyz_to_matrix
from vla3d_ros.sim.scene import ARM_JOINT_NAMES, EE_SITE, HOME_ARM_QPOS

MAX_TRANSLATION = 0.02   # metres per control step and axis
MAX_ROTATION = 0.1       # radians per control step and axis
MAX_LEAD = 0.03          # metres the command may run ahead of the measured tool position
MAX_LEAD_ROTATION = 0.3  # radians the commanded orientation may run ahead of the measured one
BLEND_FRACTION = 0.3     # share of the control period over which set-points are interpolated


def orientation_error(R_goal: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Axis-angle vector (3,) of R_goal @ R^T, in the base frame."""
    R_err = R_goal @ R.T
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, R_err.reshape(-1))
    error = np.empty(3)
    mujoco.mju_quat2Vel(error, quat, 1.0)
    return error


class DifferentialIKController:
    """Maps EE-delta actions onto the arm's joint position actuators (see module docstring)."""

    def __init__(self, model: mujoco.MjModel, *, damping: float = 0.05, iterations: int = 4,
                 nullspace_gain: float = 0.2, max_translation: float = MAX_TRANSLATION,
                 max_rotation: float = MAX_ROTATION) -> None:
        if damping <= 0:
            raise ValueError(f"damping must be > 0, got {damping}")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.model = model
        self.scratch = mujoco.MjData(model)
        self.site_id = model.site(EE_SITE).id
        self.joint_qpos = np.array([model.joint(name).qposadr[0] for name in ARM_JOINT_NAMES])
        self.joint_dofs = np.array([model.joint(name).dofadr[0] for name in ARM_JOINT_NAMES])
        self.lower = np.array([model.joint(name).range[0] for name in ARM_JOINT_NAMES])
        self.upper = np.array([model.joint(name).range[1] for name in ARM_JOINT_NAMES])
        self.arm_actuators = np.array([model.actuator(f"actuator{i}").id for i in range(1, 8)])
        self.gripper_actuator = model.actuator("gripper").id
        self.damping = damping
        self.iterations = iterations
        self.nullspace_gain = nullspace_gain
        self.max_translation = max_translation
        self.max_rotation = max_rotation
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def clip(self, action: np.ndarray) -> np.ndarray:
        """The action actually executed: deltas clipped per axis, gripper clipped to [0, 1]."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,):
            raise ValueError(f"action must be (7,) {('dx', 'dy', 'dz', 'droll', 'dpitch', 'dyaw', 'gripper')}, "
                             f"got shape {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action has non-finite entries: {action.tolist()}")
        clipped = action.copy()
        clipped[:3] = np.clip(action[:3], -self.max_translation, self.max_translation)
        clipped[3:6] = np.clip(action[3:6], -self.max_rotation, self.max_rotation)
        clipped[6] = np.clip(action[6], 0.0, 1.0)
        return clipped

    def solve(self, qpos: np.ndarray, position_goal: np.ndarray, rotation_goal: np.ndarray) -> np.ndarray:
        """Arm joint goal (7,) reaching the tool pose goal from full configuration `qpos` (nq,)."""
        data = self.scratch
        data.qpos[:] = qpos
        q = qpos[self.joint_qpos].copy()
        for _ in range(self.iterations):
            data.qpos[self.joint_qpos] = q
            mujoco.mj_kinematics(self.model, data)
            mujoco.mj_comPos(self.model, data)
            position = data.site_xpos[self.site_id]
            rotation = data.site_xmat[self.site_id].reshape(3, 3)
            error = np.concatenate([position_goal - position, orientation_error(rotation_goal, rotation)])
            mujoco.mj_jacSite(self.model, data, self._jacp, self._jacr, self.site_id)
            J = np.vstack([self._jacp, self._jacr])[:, self.joint_dofs]   # (6, 7)
            JJt = J @ J.T + (self.damping ** 2) * np.eye(6)
            J_pinv = J.T @ np.linalg.solve(JJt, np.eye(6))                   # (7, 6)
            nullspace = (np.eye(7) - J_pinv @ J) @ (self.nullspace_gain * (HOME_ARM_QPOS - q))
            q = np.clip(q + J_pinv @ error + nullspace, self.lower, self.upper)
        return q

    def reset(self, data: mujoco.MjData) -> None:
        """Command = the measured state (call after placing the arm, before stepping)."""
        self.position_command = data.site_xpos[self.site_id].copy()
        self.rotation_command = data.site_xmat[self.site_id].reshape(3, 3).copy()
        self.joint_command = data.qpos[self.joint_qpos].copy()

    def targets(self, data: mujoco.MjData, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(q_start (7,), q_goal (7,), gripper set-point) for an already clipped action."""
        position = data.site_xpos[self.site_id]
        rotation = data.site_xmat[self.site_id].reshape(3, 3)
        position_goal = position + np.clip(self.position_command + action[:3] - position, -MAX_LEAD, MAX_LEAD)
        rotation_goal = euler_xyz_to_matrix(*action[3:6]) @ self.rotation_command
        if np.linalg.norm(orientation_error(rotation_goal, rotation)) > MAX_LEAD_ROTATION:
            rotation_goal = euler_xyz_to_matrix(*action[3:6]) @ rotation
        qpos = data.qpos.copy()
        qpos[self.joint_qpos] = self.joint_command
        q_start = self.joint_command
        q_goal = self.solve(qpos, position_goal, rotation_goal)
        self.position_command, self.rotation_command, self.joint_command = position_goal, rotation_goal, q_goal
        return q_start, q_goal, float(action[6])

    def apply(self, data: mujoco.MjData, q_start: np.ndarray, q_goal: np.ndarray, gripper: float,
              fraction: float) -> None:
        """Set actuator set-points for a substep at `fraction` in [0, 1] of the control period."""
        blend = min(1.0, fraction / BLEND_FRACTION)
        data.ctrl[self.arm_actuators] = q_start + blend * (q_goal - q_start)
        data.ctrl[self.gripper_actuator] = gripper

    def hold(self, data: mujoco.MjData, gripper: float) -> None:
        """Servo the arm to where it is now and make that the command (used at reset)."""
        self.reset(data)
        data.ctrl[self.arm_actuators] = self.joint_command
        data.ctrl[self.gripper_actuator] = gripper
