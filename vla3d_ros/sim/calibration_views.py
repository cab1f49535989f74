"""Calibration sessions in the simulator: the arm shows the ChArUco board to a camera.

What an operator does with a real robot, scripted: for a fixed camera the hand holds the board
(`TabletopEnv(calibration_board="hand")`) and presents it at varied distances, offsets and tilts;
for the wrist camera the board lies on the table (`calibration_board="table"`) and the arm looks at
it from varied poses. Each view is an image plus the end-effector pose T_base_ee, exactly the
inputs `vla3d calibrate` takes from a real robot.

The poses are aimed with the camera's pose in the simulated scene — its true one, knocked or not
(an operator sees roughly where a camera points and holds the board in its view); nothing of that
pose reaches the solvers but the images. The arm is
placed by inverse kinematics (no dynamics: the board is still in every image).
"""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
from scipy.optimize import least_squares

from vla3d_ros.geometry import euler_xyz_to_matrix, invert_transform, quaternion_xyzw_to_matrix
from vla3d_ros.sim.controller import DifferentialIKController, orientation_error
from vla3d_ros.sim.env import TabletopEnv
from vla3d_ros.sim.rendering import camera_extrinsics
from vla3d_ros.sim.scene import CALIBRATION_BOARD, DEFAULT_CAMERAS, HOME_ARM_QPOS, board_geom_to_board

IK_STARTS = 4
IK_ROTATION_WEIGHT = 0.1                  # metres per radian in the IK residual
IK_TOLERANCE = (0.001, np.radians(0.5))   # metres, radians: a view whose pose IK misses is skipped


@dataclass(frozen=True)
class BoardView:
    """One calibration sample: rgb (H, W, 3) uint8 of the camera and T_base_ee (4, 4) then."""

    rgb: np.ndarray
    T_base_ee: np.ndarray


def _pose(position: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = rotation, position
    return T


def ee_matrix(env: TabletopEnv) -> np.ndarray:
    """(4, 4) T_base_ee of the tool centre point now."""
    pose = env.ee_pose()
    return _pose(pose[:3], quaternion_xyzw_to_matrix(pose[3:]))


def board_pose(env: TabletopEnv) -> np.ndarray:
    """(4, 4) T_base_board of the scene's board now (the simulator's truth)."""
    geom = env.model.geom("calibration_board").id
    return _pose(env.data.geom_xpos[geom], env.data.geom_xmat[geom].reshape(3, 3)) @ board_geom_to_board()


def _board_in_camera(rng: np.random.Generator, distance: tuple[float, float], offset: float,
                     tilt_deg: float) -> np.ndarray:
    """A random T_cam_board: board centre near the optical axis at `distance`, facing the camera."""
    width, height = CALIBRATION_BOARD.size
    rotation = euler_xyz_to_matrix(*np.radians(rng.uniform(-tilt_deg, tilt_deg, 2)), rng.uniform(-0.5, 0.5))
    centre = np.array([*rng.uniform(-offset, offset, 2), rng.uniform(*distance)])
    centre[:2] *= centre[2]   # offsets are fractions of the distance: the board stays in the image
    return _pose(centre - rotation @ np.array([width / 2, height / 2, 0.0]), rotation)


def _solve_ik(env: TabletopEnv, arm: DifferentialIKController, T_base_ee_goal: np.ndarray,
              rng: np.random.Generator) -> np.ndarray | None:
    """Arm joints (7,) putting the tool centre point at the goal, within `IK_TOLERANCE`; None if
    no start (home, then random ones) converges. Bounded least squares: presenting a board needs
    wrist postures far from home, where the controller's damped steps stall at joint limits."""
    scratch = mujoco.MjData(env.model)
    scratch.qpos[:] = env.data.qpos

    def residual(q: np.ndarray) -> np.ndarray:
        scratch.qpos[arm.joint_qpos] = q
        mujoco.mj_kinematics(env.model, scratch)
        rotation = scratch.site_xmat[arm.site_id].reshape(3, 3)
        return np.concatenate([scratch.site_xpos[arm.site_id] - T_base_ee_goal[:3, 3],
                               IK_ROTATION_WEIGHT * orientation_error(T_base_ee_goal[:3, :3], rotation)])

    for attempt in range(IK_STARTS):
        start = HOME_ARM_QPOS if attempt == 0 else rng.uniform(arm.lower, arm.upper)
        q = least_squares(residual, np.clip(start, arm.lower, arm.upper), bounds=(arm.lower, arm.upper)).x
        error = residual(q)
        if np.linalg.norm(error[:3]) < IK_TOLERANCE[0] and np.linalg.norm(error[3:]) < IK_ROTATION_WEIGHT * IK_TOLERANCE[1]:
            return q
    return None


def capture_board_views(env: TabletopEnv, camera: str, num_views: int, rng: np.random.Generator, *,
                        distance: tuple[float, float] | None = None, offset: float = 0.25,
                        tilt_deg: float = 30.0, min_visible: float = 0.75, max_attempts: int = 200) -> list[BoardView]:
    """`num_views` views of the board by `camera` (see the module docstring); the env must have
    been built with the board mount this camera needs ("hand" for fixed, "table" for the wrist)
    and reset. Poses the arm cannot reach, and views where the arm hides the board (fewer than
    `min_visible` of its corners detected), are skipped, as an operator would; ValueError after
    `max_attempts` poses if fewer views were taken."""
    on_hand = DEFAULT_CAMERAS[camera].on_hand
    needed = "table" if on_hand else "hand"
    if env.scene.calibration_board != needed:
        raise ValueError(f"camera {camera!r} is calibrated with the board on the {needed}; this env has "
                         f"calibration_board={env.scene.calibration_board!r}")
    view = env.camera_names.index(camera)
    distance = distance or ((0.3, 0.45) if on_hand else (0.45, 0.7))
    env.park_objects()
    arm = DifferentialIKController(env.model)
    camera_id = env.model.camera(camera).id
    mujoco.mj_forward(env.model, env.data)
    T_ee_board = invert_transform(ee_matrix(env)) @ board_pose(env)
    T_ee_cam = invert_transform(ee_matrix(env)) @ camera_extrinsics(env.data, camera_id)
    T_base_cam = camera_extrinsics(env.data, camera_id)
    T_base_board = board_pose(env)
    views: list[BoardView] = []
    for _ in range(max_attempts):
        if len(views) == num_views:
            break
        T_cam_board = _board_in_camera(rng, distance, offset, tilt_deg)
        if on_hand:   # the camera moves: T_base_ee = T_base_board T_board_cam T_cam_ee
            goal = T_base_board @ invert_transform(T_cam_board) @ invert_transform(T_ee_cam)
        else:         # the board moves: T_base_ee = T_base_cam T_cam_board T_board_ee
            goal = T_base_cam @ T_cam_board @ invert_transform(T_ee_board)
        q = _solve_ik(env, arm, goal, rng)
        if q is None:
            continue
        env.set_arm_qpos(q)
        rgb = env.observe().rgb[view].copy()
        detection = CALIBRATION_BOARD.detect(rgb)
        if detection is not None and len(detection.ids) >= min_visible * CALIBRATION_BOARD.num_corners:
            views.append(BoardView(rgb=rgb, T_base_ee=ee_matrix(env)))
    if len(views) < num_views:
        raise ValueError(f"the arm reached only {len(views)} of {num_views} board poses for camera {camera!r} "
                         f"in {max_attempts} attempts")
    return views
