"""Calibration: CameraInfo validation, extrinsics from config == from a TransformSource, depth decoding."""
from __future__ import annotations

import numpy as np
import pytest

from vla3d_ros.geometry import intrinsics_from_fovy, invert_transform, matrix_to_quaternion_xyzw, unproject_depth
from vla3d_ros.geometry.rotations import euler_xyz_to_matrix
from vla3d_ros.runtime.calibration import CalibrationMissing, CalibrationStore, CameraCalibration
from vla3d_ros.runtime.config import RuntimeConfig
from vla3d_ros.runtime.images import decode_color_image, decode_depth_image

K = intrinsics_from_fovy(60.0, 64, 48)


def _pose(xyz, rpy) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = euler_xyz_to_matrix(*rpy)
    T[:3, 3] = xyz
    return T


POSES = {"front": _pose([1.2, 0.0, 0.6], [-2.3, 0.0, 1.57]), "wrist": _pose([0.4, 0.1, 0.5], [3.1, 0.2, -0.4])}


def _config_dict(with_extrinsics: bool) -> dict:
    cameras = []
    for name, T in POSES.items():
        camera = {"name": name, "frame_id": f"{name}_optical",
                  "topics": {"color": f"/{name}/color", "camera_info": f"/{name}/info"}}
        if with_extrinsics:
            camera["extrinsics"] = {"xyz": T[:3, 3].tolist(), "quat_xyzw": matrix_to_quaternion_xyzw(T[:3, :3]).tolist()}
        cameras.append(camera)
    return {"base_frame": "base", "cameras": cameras}


class FakeTF:
    """A TransformSource holding base <- camera poses, like a tf2 buffer with static transforms."""

    def __init__(self, poses: dict[str, np.ndarray]) -> None:
        self.poses = poses
        self.calls = []

    def lookup_transform(self, target_frame, source_frame, stamp):
        self.calls.append((target_frame, source_frame, stamp))
        name = source_frame.removesuffix("_optical")
        if target_frame != "base" or name not in self.poses:
            raise LookupError(f'"{source_frame}" passed to lookupTransform argument source_frame does not exist')
        return self.poses[name]


def test_extrinsics_from_config_equal_those_from_a_transform_source():
    from_config = CalibrationStore.from_config(RuntimeConfig.from_dict(_config_dict(True)))
    from_tf = CalibrationStore.from_config(RuntimeConfig.from_dict(_config_dict(False)))
    tf = FakeTF(POSES)
    assert from_tf.refresh_extrinsics(tf, stamp=3.0) == {}
    assert ("base", "front_optical", 3.0) in tf.calls
    for name, T in POSES.items():
        np.testing.assert_allclose(from_config.T_base_cam(name), T, atol=1e-12)
        np.testing.assert_allclose(from_tf.T_base_cam(name), from_config.T_base_cam(name), atol=1e-12)


def test_missing_extrinsics_is_an_explicit_error_state():
    store = CalibrationStore.from_config(RuntimeConfig.from_dict(_config_dict(False)))
    errors = store.refresh_extrinsics(FakeTF({"front": POSES["front"]}))
    assert set(errors) == {"wrist"} and "wrist_optical" in errors["wrist"]
    store.update_camera_info("front", K.ravel(), 64, 48)
    store.update_camera_info("wrist", K.ravel(), 64, 48)
    assert set(store.missing()) == {"wrist"} and "extrinsics missing" in store.missing()["wrist"]
    with pytest.raises(CalibrationMissing, match="wrist.*extrinsics missing.*does not exist"):
        store.T_base_cam("wrist")
    # A later TF failure drops extrinsics that came from TF (a moving camera has no known pose
    # any more), saying why; the next successful lookup restores them.
    assert "front" in store.refresh_extrinsics(FakeTF({}))
    with pytest.raises(CalibrationMissing, match="front.*extrinsics missing.*does not exist"):
        store.T_base_cam("front")
    assert set(store.missing()) == {"front", "wrist"}
    assert store.refresh_extrinsics(FakeTF({"front": POSES["front"]}), cameras=["front"]) == {}
    np.testing.assert_allclose(store.T_base_cam("front"), POSES["front"])


def test_tf_failure_keeps_fixed_extrinsics_from_the_config():
    store = CalibrationStore.from_config(RuntimeConfig.from_dict(_config_dict(True)))
    errors = store.refresh_extrinsics(FakeTF({}))
    assert set(errors) == {"front", "wrist"}
    for name, T in POSES.items():
        np.testing.assert_allclose(store.T_base_cam(name), T, atol=1e-12)


@pytest.mark.parametrize(
    "k, width, height, match",
    [
        (np.zeros(9), 64, 48, "focal lengths must be > 0"),
        (np.r_[K.ravel()[:8], np.nan], 64, 48, "non-finite"),
        (np.r_[np.inf, K.ravel()[1:]], 64, 48, "non-finite"),
        (K.ravel()[:6], 64, 48, "9 values"),
        (K.ravel(), 0, 48, "positive"),
        (np.array([50.0, 0, 500, 0, 50, 24, 0, 0, 1]), 64, 48, "principal point"),
    ],
)
def test_camera_info_validation_quotes_the_bad_value(k, width, height, match):
    with pytest.raises(ValueError, match=match):
        CameraCalibration.from_camera_info(k, width, height)


def test_invalid_camera_info_keeps_the_previous_calibration():
    store = CalibrationStore("base", {"front": "front_optical"})
    assert store.update_camera_info("front", K.ravel(), 64, 48) is True
    assert store.update_camera_info("front", K.ravel(), 64, 48) is False  # unchanged: cache kept
    with pytest.raises(ValueError):
        store.update_camera_info("front", np.zeros(9), 64, 48)
    np.testing.assert_array_equal(store.intrinsics("front").K, K)
    with pytest.raises(KeyError, match="unknown camera 'back'"):
        store.update_camera_info("back", K.ravel(), 64, 48)


def test_image_size_must_match_camera_info():
    calibration = CameraCalibration.from_camera_info(K.ravel(), 64, 48)
    calibration.check_image_size(64, 48)
    with pytest.raises(ValueError, match="image is 32x24 but its CameraInfo says 64x48"):
        calibration.check_image_size(32, 24)


def test_cached_ray_unprojection_matches_geometry_unproject_depth():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.3, 2.0, (48, 64)).astype(np.float32)
    depth[5, 7] = np.nan
    depth[6, 8] = 0.0
    calibration = CameraCalibration.from_camera_info(K.ravel(), 64, 48)
    T = POSES["front"]
    expected, valid = unproject_depth(depth, K, T)
    points = calibration.unproject(depth, T)
    np.testing.assert_allclose(points[valid], expected[valid], atol=1e-5)
    assert np.all(np.isnan(points[~valid]))
    assert calibration.pixel_rays() is calibration.pixel_rays()  # cached
    # Known answer: pixel (u=31, v=24) at 1.5 m lies at ((u - cx) z / fx, (v - cy) z / fy, z).
    flat = calibration.unproject(np.full((48, 64), 1.5, np.float32))
    expected_pixel = [(31 - K[0, 2]) * 1.5 / K[0, 0], (24 - K[1, 2]) * 1.5 / K[1, 1], 1.5]
    np.testing.assert_allclose(flat[24, 31], expected_pixel, atol=1e-6)
    np.testing.assert_allclose(transform_back(points[valid], T), calibration.unproject(depth)[valid], atol=1e-5)


def transform_back(points_base, T):
    inverse = invert_transform(T)
    return points_base @ inverse[:3, :3].T + inverse[:3, 3]


# ---- depth and color decoding -------------------------------------------------------------------

def test_16uc1_millimetres_decode_to_metres_with_nan_for_zero():
    raw = np.array([[0, 1000, 2500], [65535, 1, 500]], dtype="<u2")
    depth = decode_depth_image(raw.tobytes(), "16UC1", 2, 3)
    expected = np.array([[np.nan, 1.0, 2.5], [65.535, 0.001, 0.5]], np.float32)
    np.testing.assert_allclose(depth.metres, expected, equal_nan=True, rtol=1e-6)
    assert depth.metres.dtype == np.float32 and depth.valid_fraction == pytest.approx(5 / 6)


def test_32fc1_invalid_values_become_nan_and_clean_data_is_zero_copy():
    raw = np.array([[1.0, 0.0, -0.5], [np.inf, np.nan, 2.0]], "<f4")
    depth = decode_depth_image(raw.tobytes(), "32FC1", 2, 3)
    np.testing.assert_array_equal(np.isnan(depth.metres), [[False, True, True], [True, True, False]])
    clean = np.array([[1.0, np.nan], [0.5, 2.0]], "<f4")
    buffer = bytearray(clean.tobytes())
    decoded = decode_depth_image(buffer, "32FC1", 2, 2).metres
    buffer[0:4] = np.float32(3.0).tobytes()  # the decoded array is a view of the message buffer
    assert decoded[0, 0] == 3.0


def test_row_padding_and_big_endian_are_honoured():
    raw = np.array([[1000, 2000], [3000, 4000]], ">u2")
    padded = np.zeros((2, 6), np.uint8)
    padded[:, :4] = raw.view(np.uint8).reshape(2, 4)
    depth = decode_depth_image(padded.tobytes(), "16UC1", 2, 2, step=6, is_bigendian=True)
    np.testing.assert_allclose(depth.metres, [[1.0, 2.0], [3.0, 4.0]])


def test_encoding_mix_up_is_reported():
    mm_as_float = np.full((4, 4), 800.0, "<f4")  # 16UC1 millimetres published as 32FC1
    assert "looks like millimetres" in decode_depth_image(mm_as_float.tobytes(), "32FC1", 4, 4).unit_warning
    metres_as_uint = np.full((4, 4), 1, "<u2")   # metres truncated into 16UC1
    assert "looks like metres" in decode_depth_image(metres_as_uint.tobytes(), "16UC1", 4, 4).unit_warning
    plausible = np.full((4, 4), 0.8, "<f4")
    assert decode_depth_image(plausible.tobytes(), "32FC1", 4, 4).unit_warning is None
    # A depth encoding other than the configured one is refused: the units cannot be trusted.
    with pytest.raises(ValueError, match="depth encoding '32FC1' but the config says '16UC1'"):
        decode_depth_image(plausible.tobytes(), "32FC1", 4, 4, expected_encoding="16UC1")
    assert decode_depth_image(plausible.tobytes(), "32FC1", 4, 4, expected_encoding="32FC1").unit_warning is None


@pytest.mark.parametrize(
    "data, encoding, match",
    [
        (bytes(4 * 4 * 2), "16UC2", "depth encoding '16UC2' is not supported"),
        (bytes(10), "16UC1", "data has 10 bytes, expected"),
    ],
)
def test_bad_depth_buffers_raise_clear_errors(data, encoding, match):
    with pytest.raises(ValueError, match=match):
        decode_depth_image(data, encoding, 4, 4)


def test_color_encodings_decode_to_rgb():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(decode_color_image(rgb.tobytes(), "rgb8", 2, 3), rgb)
    np.testing.assert_array_equal(decode_color_image(rgb[..., ::-1].tobytes(), "bgr8", 2, 3), rgb)
    bgra = np.concatenate([rgb[..., ::-1], np.full((2, 3, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(decode_color_image(bgra.tobytes(), "bgra8", 2, 3), rgb)
    mono = decode_color_image(bytes(range(6)), "mono8", 2, 3)
    assert mono.shape == (2, 3, 3) and np.all(mono[..., 0] == mono[..., 2])
    with pytest.raises(ValueError, match="color image encoding '16UC1' is not supported"):
        decode_color_image(bytes(12), "16UC1", 2, 3)
