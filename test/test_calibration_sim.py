"""Calibration against the simulator's truth: the arm shows the rendered ChArUco board to a camera,
the tools recover K and the camera pose from the images and end-effector poses alone."""
from __future__ import annotations

import numpy as np
import pytest

from vla3d_ros.calibration.handeye import HandEyeSample, rotation_angle_deg, solve_hand_eye
from vla3d_ros.calibration.intrinsics import calibrate_intrinsics
from vla3d_ros.geometry import invert_transform
from vla3d_ros.sim.calibration_views import board_pose, capture_board_views, ee_matrix
from vla3d_ros.sim.env import TabletopEnv
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


def test_camera_knock_moves_the_front_camera_and_reports_true_or_stale_pose():
    from vla3d_ros.sim.perturbations import knock, nominal_camera_pose, parse_perturbation

    env = TabletopEnv("push_to_zone", image_size=(64, 64), cameras=("front", "side"))
    try:
        nominal = env.reset(seed=3)
        env.set_perturbations([parse_perturbation("camera_knock")])
        knocked = env.reset(seed=3)
        env.set_perturbations([parse_perturbation("camera_knock_stale")])
        stale = env.reset(seed=3)
    finally:
        env.close()
    assert np.allclose(nominal.T_base_cam[0], nominal_camera_pose("front"), atol=1e-6)
    assert np.allclose(knocked.T_base_cam[0], knock(nominal_camera_pose("front")), atol=1e-6)
    moved = np.linalg.norm(knocked.T_base_cam[0][:3, 3] - nominal.T_base_cam[0][:3, 3])
    assert 0.03 < moved < 0.04 and 3.0 < rotation_angle_deg(knocked.T_base_cam[0][:3, :3].T @ nominal.T_base_cam[0][:3, :3])
    # the stale variant sees the same (moved) images but is told the old pose; the side camera is untouched
    assert np.array_equal(stale.rgb, knocked.rgb) and not np.array_equal(stale.rgb[0], nominal.rgb[0])
    assert np.allclose(stale.T_base_cam[0], nominal.T_base_cam[0], atol=1e-6)
    assert np.allclose(knocked.T_base_cam[1], nominal.T_base_cam[1]) and np.array_equal(knocked.rgb[1], nominal.rgb[1])
