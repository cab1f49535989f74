"""Calibration against the simulator's truth: the arm shows the rendered ChArUco board to a camera,
the tools recover K and the camera pose from the images and end-effector poses alone."""
from __future__ import annotations

import numpy as np
import pytest

from vla3d_ros.calibration.handeye import HandEyeSample, rotation_angle_deg, solve_hand_eye
from vla3d_ros.calibration.intrinsics import calibrate_intrinsics
from vla3d_ros.geometry import invert_transform, transform_points
from vla3d_ros.sim.calibration_views import board_pose, capture_board_views, ee_matrix
from vla3d_ros.sim.env import TabletopEnv
from vla3d_ros.sim.perturbations import (
    CAMERA_KNOCK_LEVELS,
    LEVELS,
    CameraKnockRecalibrated,
    knock,
    nominal_camera_pose,
    parse_perturbation,
    recalibrated_knocked_pose,
)
from vla3d_ros.sim.scene import CALIBRATION_BOARD

IMAGE_SIZE = (480, 640)   # (H, W): the board's markers need ~3 px per bit at 0.5 m
NUM_VIEWS = 10


@pytest.fixture(scope="module", params=["front", "wrist"])
def calibrated(request):
    camera = request.param
    env = TabletopEnv("push_to_zone", image_size=IMAGE_SIZE, cameras=(camera,),
                      calibration_board="table" if camera == "wrist" else "hand")
    try:
        truth = env.reset(seed=0)
        K_true = truth.intrinsics[0]
        # what the solver estimates: T_base_cam of a fixed camera, T_ee_cam of the wrist camera
        X_true = truth.T_base_cam[0] if camera != "wrist" else invert_transform(ee_matrix(env)) @ truth.T_base_cam[0]
        views = capture_board_views(env, camera, NUM_VIEWS, np.random.default_rng(0))
        board_truth = board_pose(env)
    finally:
        env.close()
    detections = [CALIBRATION_BOARD.detect(view.rgb) for view in views]
    intrinsics = calibrate_intrinsics(detections)
    samples = [HandEyeSample(view.T_base_ee, detection) for view, detection in zip(views, detections)]
    mount = "eye_in_hand" if camera == "wrist" else "eye_to_hand"
    hand_eye = solve_hand_eye(samples, intrinsics.K, intrinsics.distortion, mount=mount)
    return camera, K_true, X_true, board_truth, intrinsics, hand_eye


def test_intrinsics_within_one_percent_of_the_truth(calibrated):
    camera, K_true, _, _, intrinsics, _ = calibrated
    for (row, col), name in {(0, 0): "fx", (1, 1): "fy", (0, 2): "cx", (1, 2): "cy"}.items():
        error = abs(intrinsics.K[row, col] - K_true[row, col]) / K_true[row, col]
        assert error < 0.01, f"{camera} {name}: {intrinsics.K[row, col]:.2f} vs {K_true[row, col]:.2f}"
    assert intrinsics.rms < 0.5, intrinsics.summary()


def test_extrinsics_within_5_mm_and_half_a_degree(calibrated):
    camera, _, X_true, board_truth, _, hand_eye = calibrated
    translation = np.linalg.norm(hand_eye.X[:3, 3] - X_true[:3, 3])
    rotation = rotation_angle_deg(hand_eye.X[:3, :3].T @ X_true[:3, :3])
    assert translation < 0.005 and rotation < 0.5, f"{camera}: {1000 * translation:.2f} mm, {rotation:.3f} deg"
    assert hand_eye.reprojection_rms < 0.5, hand_eye.summary()
    if camera == "wrist":   # eye-in-hand also finds where the board lies (Y = T_base_board)
        assert np.linalg.norm(hand_eye.Y[:3, 3] - board_truth[:3, 3]) < 0.005


def test_camera_knock_level_1_is_the_knock_first_measured():
    # docs/eval/knock_camera_knock*.json were measured with this knock ("camera_knock:1")
    assert CAMERA_KNOCK_LEVELS[1] == {"camera": "front", "translation": (0.0, 0.03, -0.02),
                                      "rotation_deg": (2.0, -3.0, 1.5)}
    assert parse_perturbation("camera_knock").level == 1 and set(CAMERA_KNOCK_LEVELS) == set(LEVELS)


def _knock_size(level: int) -> tuple[float, float, float]:
    """(metres moved, degrees turned, mean metres by which a stale calibration misplaces what the
    knocked camera sees on the table top)."""
    nominal = nominal_camera_pose("front")
    knocked = knock(nominal, level)
    table_top = np.array([[x, y, z] for x in (0.36, 0.5, 0.64) for y in (-0.22, 0.0, 0.22) for z in (0.0, 0.1)])
    misplaced = transform_points(nominal @ invert_transform(knocked), table_top)
    return (float(np.linalg.norm(knocked[:3, 3] - nominal[:3, 3])),
            rotation_angle_deg(knocked[:3, :3].T @ nominal[:3, :3]),
            float(np.mean(np.linalg.norm(misplaced - table_top, axis=1))))


def test_camera_knock_grows_with_level():
    sizes = np.array([_knock_size(level) for level in LEVELS])
    assert np.all(np.diff(sizes, axis=0) > 0), sizes
    assert 0.035 < sizes[0, 0] < 0.037 and 3.8 < sizes[0, 1] < 4.0       # 3.6 cm / 3.9 deg
    assert sizes[1, 0] > 0.075 and sizes[1, 1] > 7.5 and sizes[2, 0] > 0.11 and sizes[2, 1] > 11.0
    assert sizes[2, 2] > 2.5 * sizes[0, 2]   # a stale calibration misplaces the table top 6 -> 18 cm


@pytest.fixture(scope="module")
def knock_env():
    env = TabletopEnv("push_to_zone", image_size=(64, 64), cameras=("front", "side"))
    yield env
    env.close()


@pytest.mark.parametrize("level", LEVELS)
def test_camera_knock_moves_the_front_camera_and_reports_true_or_stale_pose(knock_env, level):
    env = knock_env
    env.set_perturbations([])
    nominal = env.reset(seed=3)
    env.set_perturbations([parse_perturbation(f"camera_knock:{level}")])
    knocked = env.reset(seed=3)
    seen = set(np.unique(env.segmentation()[0]))
    env.set_perturbations([parse_perturbation(f"camera_knock_stale:{level}")])
    stale = env.reset(seed=3)
    assert np.allclose(nominal.T_base_cam[0], nominal_camera_pose("front"), atol=1e-6)
    assert np.allclose(knocked.T_base_cam[0], knock(nominal_camera_pose("front"), level), atol=1e-6)
    # the knocked camera still sees every object of the task
    assert set(env.object_ids().values()) <= seen
    # the stale variant sees the same (moved) images but is told the old pose; the side camera is untouched
    assert np.array_equal(stale.rgb, knocked.rgb) and not np.array_equal(stale.rgb[0], nominal.rgb[0])
    assert np.allclose(stale.T_base_cam[0], nominal.T_base_cam[0], atol=1e-6)
    assert np.allclose(knocked.T_base_cam[1], nominal.T_base_cam[1]) and np.array_equal(knocked.rgb[1], nominal.rgb[1])


def test_recalibrated_split_reports_the_pose_the_tools_recover_within_5_mm_and_half_a_degree():
    # One calibration session costs ~10 s of CPU, so only the largest knock runs here (its board
    # poses are the hardest to show); levels 1 and 2 recover 0.9 mm / 0.31 deg and 4.0 mm / 0.34 deg.
    level = LEVELS[-1]
    reported = CameraKnockRecalibrated(level).reported_pose()
    truth = knock(nominal_camera_pose("front"), level)
    translation = np.linalg.norm(reported[:3, 3] - truth[:3, 3])
    rotation = rotation_angle_deg(reported[:3, :3].T @ truth[:3, :3])
    assert translation < 0.005 and rotation < 0.5, f"level {level}: {1000 * translation:.2f} mm, {rotation:.3f} deg"
    assert reported is recalibrated_knocked_pose(level)   # computed once per process and level
