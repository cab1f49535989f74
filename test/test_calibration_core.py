"""Calibration core on synthetic data: board detection, intrinsics, hand-eye, file formats."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from vla3d_ros.calibration.board import BoardDetection, CharucoBoardSpec
from vla3d_ros.calibration.handeye import (
    HandEyeSample,
    extrinsics_block,
    rotation_angle_deg,
    solve_hand_eye,
    static_transform_snippet,
)
from vla3d_ros.calibration.intrinsics import (
    calibrate_intrinsics,
    camera_info_yaml,
    coverage,
    load_camera_info_yaml,
)
from vla3d_ros.geometry import euler_xyz_to_matrix, invert_transform
from vla3d_ros.runtime.config import Extrinsics

BOARD = CharucoBoardSpec()
K_TRUE = np.array([[460.0, 0.0, 318.0], [0.0, 455.0, 242.0], [0.0, 0.0, 1.0]])
IMAGE_SIZE = (640, 480)


def pose(rotation_xyz, translation) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = euler_xyz_to_matrix(*rotation_xyz)
    T[:3, 3] = translation
    return T


def random_board_in_camera(rng: np.random.Generator) -> np.ndarray:
    """A T_cam_board with (most of) the board in a 640x480 image at 0.45-0.7 m, anywhere in it."""
    width, height = BOARD.size
    R = euler_xyz_to_matrix(*rng.uniform(-0.45, 0.45, 3))
    centre = np.array([rng.uniform(-0.18, 0.18), rng.uniform(-0.1, 0.1), rng.uniform(0.45, 0.7)])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = centre - R @ np.array([width / 2, height / 2, 0.0])
    return T


def synthetic_detection(T_cam_board: np.ndarray, rng: np.random.Generator, noise_px: float = 0.15) -> BoardDetection:
    points = BOARD.corner_points()
    projected, _ = cv2.projectPoints(points, cv2.Rodrigues(T_cam_board[:3, :3])[0], T_cam_board[:3, 3], K_TRUE,
                                     np.zeros(5))
    image_points = projected.reshape(-1, 2) + rng.normal(0.0, noise_px, (len(points), 2))
    return BoardDetection(ids=np.arange(len(points)), image_points=image_points, object_points=points,
                          image_size=IMAGE_SIZE)


def test_board_spec_rejects_bad_values_naming_them():
    with pytest.raises(ValueError, match="marker_length"):
        CharucoBoardSpec(square_length=0.03, marker_length=0.04)
    with pytest.raises(ValueError, match="DICT_NOPE"):
        CharucoBoardSpec(dictionary="DICT_NOPE")
    with pytest.raises(ValueError, match="needs 60 markers"):
        CharucoBoardSpec(squares_x=11, squares_y=11, dictionary="DICT_4X4_50")


def test_detection_in_a_rendered_view_gives_the_board_pose():
    """Warp the printed board into a pinhole view of known pose: every corner found, pose recovered."""
    pixels_per_square = 100
    image = BOARD.image(pixels_per_square)
    T_cam_board = pose((0.3, -0.25, 0.1), (-0.1, -0.12, 0.55))
    # board-plane metres -> image pixels of the printed board (pixel centres at integers)
    metres_to_print = np.array([[pixels_per_square / BOARD.square_length, 0, -0.5],
                                [0, pixels_per_square / BOARD.square_length, -0.5], [0, 0, 1]])
    plane_to_view = K_TRUE @ np.column_stack([T_cam_board[:3, 0], T_cam_board[:3, 1], T_cam_board[:3, 3]])
    view = cv2.warpPerspective(image, plane_to_view @ np.linalg.inv(metres_to_print), IMAGE_SIZE,
                               flags=cv2.INTER_AREA, borderValue=128)
    detection = BOARD.detect(view)
    assert detection is not None and sorted(detection.ids) == list(range(BOARD.num_corners))
    T, rms = detection.pose(K_TRUE)
    assert rms < 0.5
    assert np.linalg.norm(T[:3, 3] - T_cam_board[:3, 3]) < 0.002
    assert rotation_angle_deg(T[:3, :3].T @ T_cam_board[:3, :3]) < 1.0   # one view: tilt is the weak axis
    assert BOARD.detect(np.full((480, 640), 128, np.uint8)) is None


def test_intrinsics_recover_k_and_write_a_camera_info_yaml_ros_loads():
    rng = np.random.default_rng(0)
    detections = [synthetic_detection(random_board_in_camera(rng), rng) for _ in range(20)]
    result = calibrate_intrinsics(detections)
    assert np.allclose(result.K, K_TRUE, rtol=0.01, atol=1.0), result.summary()
    assert result.rms < 0.3 and result.num_views == 20 and result.num_corners == 20 * BOARD.num_corners
    text = camera_info_yaml(result, "front")
    data = yaml.safe_load(text)
    # camera_calibration_parsers' keys and matrix layout
    assert set(data) == {"image_width", "image_height", "camera_name", "camera_matrix", "distortion_model",
                         "distortion_coefficients", "rectification_matrix", "projection_matrix"}
    assert (data["image_width"], data["image_height"]) == IMAGE_SIZE
    assert data["projection_matrix"]["rows"] == 3 and data["projection_matrix"]["cols"] == 4
    loaded = load_camera_info_yaml(text)
    assert np.allclose(loaded.K, result.K) and np.allclose(loaded.distortion, result.distortion)
    with pytest.raises(ValueError, match="camera_matrix"):
        load_camera_info_yaml("image_width: 640\nimage_height: 480\n")


def test_intrinsics_refuse_too_few_views_and_mixed_sizes():
    rng = np.random.default_rng(1)
    detections = [synthetic_detection(random_board_in_camera(rng), rng) for _ in range(3)]
    with pytest.raises(ValueError, match="at least 3 views"):
        calibrate_intrinsics(detections[:2])
    other = BoardDetection(detections[0].ids, detections[0].image_points, detections[0].object_points, (320, 240))
    with pytest.raises(ValueError, match="one size"):
        calibrate_intrinsics([*detections[1:], other])


def test_coverage_counts_grid_cells_with_corners():
    corner = BoardDetection(np.array([0]), np.array([[5.0, 5.0]]), np.zeros((1, 3)), IMAGE_SIZE)
    assert coverage([corner], IMAGE_SIZE) == pytest.approx(1 / 48)
    v, u = np.mgrid[0:480:40, 0:640:40]
    everywhere = BoardDetection(np.arange(u.size), np.column_stack([u.ravel(), v.ravel()]).astype(float),
                                np.zeros((u.size, 3)), IMAGE_SIZE)
    assert coverage([everywhere], IMAGE_SIZE) == 1.0


@pytest.mark.parametrize("mount", ["eye_to_hand", "eye_in_hand"])
def test_hand_eye_recovers_the_camera_pose_for_both_mounts(mount):
    rng = np.random.default_rng(2)
    X_true = pose((-2.2, 0.1, 1.6), (1.0, 0.05, 0.5)) if mount == "eye_to_hand" else pose((0.2, -0.1, 1.0), (0.06, 0.01, 0.05))
    Y_true = pose((0.1, 1.5, 0.2), (0.05, -0.1, 0.08)) if mount == "eye_to_hand" else pose((0, 0, 0.3), (0.5, 0.1, 0.0))
    samples = []
    for _ in range(10):
        T_cam_board = random_board_in_camera(rng)
        # X B = A Y  (module docstring of calibration.handeye)
        A = X_true @ T_cam_board @ invert_transform(Y_true)
        T_base_ee = A if mount == "eye_to_hand" else invert_transform(A)
        samples.append(HandEyeSample(T_base_ee, synthetic_detection(T_cam_board, rng)))
    result = solve_hand_eye(samples, K_TRUE, mount=mount)
    assert np.linalg.norm(result.X[:3, 3] - X_true[:3, 3]) < 0.001, result.summary()
    assert rotation_angle_deg(result.X[:3, :3].T @ X_true[:3, :3]) < 0.1
    assert result.reprojection_rms < 0.3 and result.translation_residuals.max() < 0.005
    # a wrong EE pose in one sample shows in the residuals
    bad = list(samples)
    bad[3] = HandEyeSample(samples[3].T_base_ee @ pose((0, 0, 0), (0.02, 0, 0)), samples[3].detection)
    assert solve_hand_eye(bad, K_TRUE, mount=mount).reprojection_rms > 3 * result.reprojection_rms


def test_hand_eye_refuses_samples_without_rotation():
    rng = np.random.default_rng(3)
    T_cam_board = random_board_in_camera(rng)
    samples = [HandEyeSample(pose((0, 0, 0), (0.4 + 0.02 * i, 0, 0.3)), synthetic_detection(T_cam_board, rng))
               for i in range(6)]
    with pytest.raises(ValueError, match="rotations span only"):
        solve_hand_eye(samples, K_TRUE, mount="eye_to_hand")
    with pytest.raises(ValueError, match="mount"):
        solve_hand_eye(samples, K_TRUE, mount="on_the_table")


def test_extrinsics_block_loads_as_runtime_config_and_snippet_names_frames():
    T = pose((-2.0, 0.2, 1.5), (1.05, 0.0, 0.52))
    block = extrinsics_block(T)
    assert np.allclose(Extrinsics(xyz=tuple(block["xyz"]), quat_xyzw=tuple(block["quat_xyzw"])).matrix(), T, atol=1e-6)
    snippet = static_transform_snippet(T, "panda_link0", "front_color_optical_frame")
    assert "static_transform_publisher --x 1.050000" in snippet
    assert "--frame-id panda_link0 --child-frame-id front_color_optical_frame" in snippet
    assert "'--child-frame-id', 'front_color_optical_frame'" in snippet
