"""`vla3d calibrate`: a simulated session written as a sample folder, then intrinsics and hand-eye
from it through the command line, compared with the simulator's truth; bad input fails in one line."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from vla3d_ros.calibration.board import CharucoBoardSpec
from vla3d_ros.calibration.handeye import rotation_angle_deg
from vla3d_ros.calibration.intrinsics import load_camera_info_yaml
from vla3d_ros.cli import main
from vla3d_ros.runtime.config import Extrinsics


def _matrix(block: dict) -> np.ndarray:
    return Extrinsics(xyz=tuple(block["xyz"]), quat_xyzw=tuple(block["quat_xyzw"])).matrix()


def test_sim_capture_then_intrinsics_then_handeye_recover_the_wrist_camera(tmp_path, capsys):
    samples = tmp_path / "wrist_samples"
    assert main(["calibrate", "sim-capture", "--camera", "wrist", "--views", "8", "--out", str(samples)]) == 0
    truth = yaml.safe_load((samples / "truth.yaml").read_text())
    camera_info = tmp_path / "wrist.yaml"
    assert main(["calibrate", "intrinsics", "--images", str(samples), "--camera", "wrist",
                 "--out", str(camera_info)]) == 0
    info = load_camera_info_yaml(camera_info.read_text())
    assert np.allclose(info.K, truth["K"], rtol=0.01)
    extrinsics = tmp_path / "wrist_extrinsics.yaml"
    assert main(["calibrate", "handeye", "--images", str(samples), "--mount", "eye_in_hand", "--camera", "wrist",
                 "--camera-info", str(camera_info), "--out", str(extrinsics)]) == 0
    text = extrinsics.read_text()
    result = yaml.safe_load(text)
    assert result["parent_frame"] == "ee_site" and result["child_frame"] == "wrist_optical"
    X, X_true = _matrix(result["T_ee_cam"]), _matrix(truth["T_ee_cam"])
    assert np.linalg.norm(X[:3, 3] - X_true[:3, 3]) < 0.005
    assert rotation_angle_deg(X[:3, :3].T @ X_true[:3, :3]) < 0.5
    assert "static_transform_publisher" in text and "--frame-id ee_site --child-frame-id wrist_optical" in text
    out = capsys.readouterr().out
    assert "board found in 8 of 8 images" in out and "reprojection RMS" in out


@pytest.mark.parametrize("argv, message", [
    (["calibrate", "intrinsics", "--images", "/nonexistent", "--camera", "c", "--out", "x.yaml"],
     "/nonexistent is not a directory"),
    (["calibrate", "intrinsics", "--bag", "/tmp/x.mcap", "--camera", "c", "--out", "x.yaml"], "--bag needs --topic"),
    (["calibrate", "board", "--squares", "5by7", "--out", "b.png"], "--squares must look like 5x7"),
    (["calibrate", "board", "--marker-length", "0.05", "--out", "b.png"], "marker_length"),
])
def test_bad_input_fails_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vla3d calibrate: error:") and message in err


def test_too_few_board_views_is_a_one_line_error(tmp_path, capsys):
    from vla3d_ros.calibration.samples import SampleFolderWriter

    writer = SampleFolderWriter(tmp_path / "s", "front", CharucoBoardSpec())
    writer.add(np.full((48, 64, 3), 200, np.uint8), None, 0.0)
    assert main(["calibrate", "intrinsics", "--images", str(tmp_path / "s"), "--camera", "front",
                 "--out", str(tmp_path / "f.yaml")]) == 2
    assert "at least 3 views" in capsys.readouterr().err


def test_board_writes_a_printable_image_that_detects(tmp_path, capsys):
    import cv2

    path = tmp_path / "board.png"
    assert main(["calibrate", "board", "--out", str(path), "--dpi", "100"]) == 0
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    detection = CharucoBoardSpec().detect(np.pad(image, 40, constant_values=255))
    assert detection is not None and len(detection.ids) == CharucoBoardSpec().num_corners
    assert "200 x 280 mm" in capsys.readouterr().out


def test_bag_images_pair_with_the_nearest_ee_transform_and_feed_intrinsics(tmp_path, capsys):
    from rosbags.rosbag2 import StoragePlugin, Writer

    from vla3d_ros.calibration.samples import read_bag_samples
    from vla3d_ros.data import bags

    store = bags.typestore()
    board = np.repeat(np.pad(CharucoBoardSpec().image(40), 30, constant_values=255)[..., None], 3, axis=2)
    path = tmp_path / "session.mcap"
    poses = {1.0: 0.1, 2.01: 0.2, 3.2: 0.3}   # EE transform stamps -> x; 3.2 is 0.2 s from any image
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        image_topic = writer.add_connection("/front/color/image_raw", bags.IMAGE, typestore=store)
        tf_topic = writer.add_connection("/tf", "tf2_msgs/msg/TFMessage", typestore=store)
        for stamp, x in poses.items():
            T = np.eye(4)
            T[0, 3] = x
            msg = store.types["tf2_msgs/msg/TFMessage"](transforms=[bags.transform_message(T, int(stamp * 1e9), "base_link",
                                                                                  "ee_link")])
            writer.write(tf_topic, int(stamp * 1e9), store.serialize_cdr(msg, "tf2_msgs/msg/TFMessage"))
        for stamp in (1.0, 2.0, 3.0):
            msg = bags._image(board, "rgb8", int(stamp * 1e9), "front_optical")
            writer.write(image_topic, int(stamp * 1e9), store.serialize_cdr(msg, bags.IMAGE))
    samples = read_bag_samples(path, "/front/color/image_raw", base_frame="base_link", ee_frame="ee_link")
    assert [s.stamp for s in samples] == [1.0, 2.0]
    assert [s.T_base_ee[0, 3] for s in samples] == [0.1, 0.2] and np.array_equal(samples[0].rgb, board)
    assert [s.stamp for s in read_bag_samples(path, "/front/color/image_raw", every=2)] == [1.0, 3.0]
    with pytest.raises(ValueError, match="no /tf transform base_link -> tool0"):
        read_bag_samples(path, "/front/color/image_raw", base_frame="base_link", ee_frame="tool0")
    assert main(["calibrate", "intrinsics", "--bag", str(path), "--topic", "/nope", "--camera", "front",
                 "--out", str(tmp_path / "f.yaml")]) == 2
    assert "no topic '/nope'" in capsys.readouterr().err
