"""conversions.py: every message <-> array round trip, through the real CDR wire format."""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image, JointState, PointCloud2
from visualization_msgs.msg import Marker

from vla3d_ros import types
from vla3d_ros.geometry import intrinsics_from_fovy
from vla3d_ros.msg import ActionChunk as ActionChunkMsg
from vla3d_ros.msg import Instance3DArray
from vla3d_ros.ros import conversions as conv
from vla3d_ros.runtime.calibration import CameraCalibration
from vla3d_ros.runtime.diagnostics import Level, Status


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def wire(msg):
    """The message as another process receives it."""
    return deserialize_message(serialize_message(msg), type(msg))


@pytest.mark.parametrize("seconds", [0.0, 1e-9, 1.5, 1700000000.123456789, 4.999999999])
def test_time_round_trip_is_exact_to_the_nanosecond(seconds):
    stamp = conv.seconds_to_time(seconds)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert conv.time_to_seconds(stamp) == pytest.approx(seconds, abs=1e-9)
    assert conv.duration_to_seconds(conv.seconds_to_duration(seconds)) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_stamps_are_refused_with_the_value(bad):
    with pytest.raises(conv.ConversionError, match=repr(bad).replace("(", r"\(")):
        conv.seconds_to_time(bad)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_color_image_round_trip(rng, encoding):
    channels = 4 if encoding.endswith("a8") else 3
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    pixels = rgb if encoding.startswith("rgb") else rgb[..., ::-1]
    if channels == 4:
        pixels = np.concatenate([pixels, np.full((5, 7, 1), 255, np.uint8)], axis=-1)
    msg = wire(conv.array_to_image(np.ascontiguousarray(pixels), encoding, stamp=3.25, frame_id="cam"))
    assert (msg.encoding, msg.height, msg.width, msg.header.frame_id) == (encoding, 5, 7, "cam")
    assert conv.time_to_seconds(msg.header.stamp) == 3.25
    np.testing.assert_array_equal(conv.image_to_rgb(msg), rgb)


def test_rgb8_decoding_is_zero_copy(rng):
    msg = conv.array_to_image(rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8), "rgb8")
    assert np.shares_memory(conv.image_to_rgb(msg), np.frombuffer(msg.data, np.uint8))


def test_mono_becomes_grey_rgb(rng):
    mono = rng.integers(0, 256, size=(3, 4), dtype=np.uint8)
    np.testing.assert_array_equal(conv.image_to_rgb(wire(conv.array_to_image(mono, "mono8"))),
                                  np.stack([mono] * 3, axis=-1))


def test_depth_round_trip_in_both_encodings(rng):
    millimetres = rng.integers(1, 4000, size=(6, 5), dtype=np.uint16)
    millimetres[0, 0] = 0                                     # no return
    depth = conv.image_to_depth(wire(conv.array_to_image(millimetres, "16UC1")))
    expected = millimetres.astype(np.float32) * np.float32(0.001)
    expected[0, 0] = np.nan
    np.testing.assert_array_equal(depth.metres, expected)
    metres = conv.image_to_depth(wire(conv.array_to_image(expected, "32FC1"))).metres
    np.testing.assert_array_equal(metres, expected)


def test_padded_big_endian_depth_is_decoded(rng):
    millimetres = rng.integers(1, 5000, size=(3, 5), dtype=np.uint16)
    padded = np.zeros((3, 16), dtype=np.uint8)               # step 16 > 5 * 2 bytes
    padded[:, :10] = millimetres.astype(">u2").view(np.uint8).reshape(3, 10)
    msg = Image(height=3, width=5, encoding="16UC1", is_bigendian=1, step=16, data=padded.tobytes())
    np.testing.assert_allclose(conv.image_to_depth(wire(msg)).metres, millimetres / 1000.0, rtol=1e-6)


@pytest.mark.parametrize("mutate,match", [
    (lambda m: setattr(m, "encoding", "yuv422"), "encoding 'yuv422' is not supported"),
    (lambda m: setattr(m, "step", 5), "step 5 is smaller than width 4"),
    (lambda m: setattr(m, "height", 9), "expected step 12 x height 9"),
    (lambda m: setattr(m, "width", 0), "size must be positive, got 0x3"),
])
def test_malformed_images_raise_clear_errors(mutate, match):
    msg = conv.array_to_image(np.zeros((3, 4, 3), np.uint8), "rgb8")
    mutate(msg)
    with pytest.raises(ValueError, match=match):
        conv.image_to_rgb(msg)


def test_building_images_checks_dtype_and_shape():
    with pytest.raises(conv.ConversionError, match="needs uint16 pixels, got float32"):
        conv.array_to_image(np.zeros((3, 4), np.float32), "16UC1")
    with pytest.raises(conv.ConversionError, match=r"rgb8 needs \(H, W, 3\) pixels, got \(3, 4\)"):
        conv.array_to_image(np.zeros((3, 4), np.uint8), "rgb8")
    with pytest.raises(conv.ConversionError, match="unsupported image encoding 'jpeg'"):
        conv.array_to_image(np.zeros((3, 4), np.uint8), "jpeg")


def test_camera_info_round_trip():
    calibration = CameraCalibration(K=intrinsics_from_fovy(45.0, 64, 48), width=64, height=48,
                                    distortion=np.array([0.1, -0.02, 0.0, 0.0, 0.001]))
    msg = wire(conv.calibration_to_camera_info(calibration, stamp=1.0, frame_id="front_optical"))
    back = conv.camera_info_to_calibration(msg)
    assert back.same_as(calibration)
    np.testing.assert_array_equal(np.asarray(msg.p).reshape(3, 4)[:, :3], calibration.K)


@pytest.mark.parametrize("k,match", [
    (np.zeros(9), "focal lengths must be > 0"),
    (np.array([100, 0, 32, 0, 100, 24, 0, 0, np.nan]), "non-finite"),
])
def test_invalid_camera_info_is_refused_naming_the_frame(k, match):
    calibration = CameraCalibration(K=intrinsics_from_fovy(45.0, 64, 48), width=64, height=48)
    msg = conv.calibration_to_camera_info(calibration, frame_id="side")
    msg.k = k.astype(np.float64)
    with pytest.raises(conv.ConversionError, match=f"'side'.*{match}"):
        conv.camera_info_to_calibration(msg)


def test_joint_state_round_trip():
    names = ("j1", "j2", "finger")
    positions = np.array([0.1, -1.2, 0.04])
    msg = wire(conv.arrays_to_joint_state(names, positions, velocities=np.ones(3), stamp=2.5))
    names2, positions2 = conv.joint_state_to_arrays(msg)
    assert names2 == names
    np.testing.assert_array_equal(positions2, positions)
    msg.position = [0.0, 1.0]
    with pytest.raises(conv.ConversionError, match="3 names but 2 positions"):
        conv.joint_state_to_arrays(msg)
    with pytest.raises(conv.ConversionError, match="not finite"):
        conv.joint_state_to_arrays(JointState(name=["a"], position=[float("nan")]))


def test_action_chunk_round_trip(rng):
    chunk = types.ActionChunk(actions=rng.standard_normal((8, 7)).astype(np.float32),
                              dimension_names=types.EE_DELTA_ACTION_NAMES, step_period=0.05,
                              stamp=12.5, inference_latency=0.125)
    msg = wire(conv.action_chunk_to_msg(chunk, "base"))
    assert (msg.rows, msg.cols, msg.header.frame_id) == (8, 7, "base")
    back = conv.msg_to_action_chunk(msg)
    np.testing.assert_array_equal(back.actions, chunk.actions)
    assert back.dimension_names == chunk.dimension_names
    assert (back.step_period, back.stamp, back.inference_latency) == (0.05, 12.5, 0.125)


def test_inconsistent_action_chunk_is_refused():
    msg = ActionChunkMsg(rows=2, cols=2, dimension_names=["a", "b"], data=[1.0, 2.0, 3.0])
    with pytest.raises(conv.ConversionError, match="2x2 but carries 3"):
        conv.msg_to_action_chunk(msg)
    msg = ActionChunkMsg(rows=1, cols=2, dimension_names=["a"], data=[1.0, 2.0])
    with pytest.raises(conv.ConversionError, match="2 columns but 1 names"):
        conv.msg_to_action_chunk(msg)


def make_instances(rng) -> types.Instances:
    return types.Instances(
        ids=np.array([3, 11, 0]), scores=np.array([0.9, 0.5, 0.25], np.float32),
        centroids=rng.standard_normal((3, 3)).astype(np.float32),
        extents=np.abs(rng.standard_normal((3, 3))).astype(np.float32),
        completed_points=rng.standard_normal((7, 3)).astype(np.float32),
        completed_instance=np.array([3, 3, 11, 11, 11, 0, 3]),
        labels=("cube", "", "bowl"),
    )


def test_instances_and_completed_points_round_trip(rng):
    instances = make_instances(rng)
    msg = wire(conv.instances_to_msg(instances, stamp=4.0, frame_id="base"))
    cloud = wire(conv.points_to_cloud(instances.completed_points, instances.completed_instance,
                                      stamp=4.0, frame_id="base"))
    assert [i.num_completed_points for i in msg.instances] == [3, 3, 1]
    assert [i.uncertainty for i in msg.instances] == pytest.approx([0.1, 0.5, 0.75])
    back = conv.msg_to_instances(msg, cloud)
    np.testing.assert_array_equal(back.ids, instances.ids)
    np.testing.assert_array_equal(back.scores, instances.scores)
    np.testing.assert_array_equal(back.centroids, instances.centroids)
    np.testing.assert_array_equal(back.extents, instances.extents)
    np.testing.assert_array_equal(back.completed_points, instances.completed_points)
    np.testing.assert_array_equal(back.completed_instance, instances.completed_instance)
    assert back.labels == instances.labels
    empty = conv.msg_to_instances(Instance3DArray())
    assert empty.centroids.shape == (0, 3) and len(empty.ids) == 0


def test_cloud_reader_handles_foreign_layouts(rng):
    """A cloud from another driver: float64 xyz, extra field, padded rows, no instance field."""
    points = rng.standard_normal((2, 3, 3))                  # height 2, width 3
    record = np.dtype({"names": ["x", "y", "z"], "formats": ["<f8"] * 3, "offsets": [0, 8, 16],
                       "itemsize": 32})
    rows = np.zeros((2, 3), record)
    rows["x"], rows["y"], rows["z"] = points[..., 0], points[..., 1], points[..., 2]
    data = np.zeros((2, 3 * 32 + 8), np.uint8)               # 8 padding bytes per row
    data[:, :96] = rows.view(np.uint8).reshape(2, 96)
    from sensor_msgs.msg import PointField
    msg = PointCloud2(height=2, width=3, point_step=32, row_step=104, data=data.tobytes(),
                      fields=[PointField(name=n, offset=o, datatype=PointField.FLOAT64, count=1)
                              for n, o in (("x", 0), ("y", 8), ("z", 16))])
    xyz, instance = conv.cloud_to_points(wire(msg))
    np.testing.assert_allclose(xyz, points.reshape(-1, 3).astype(np.float32))
    np.testing.assert_array_equal(instance, -1)
    msg.data = msg.data[:100]
    with pytest.raises(conv.ConversionError, match="carries 100 bytes"):
        conv.cloud_to_points(msg)


def test_markers_colour_by_id_and_label_score_and_uncertainty(rng):
    instances = make_instances(rng)
    markers = conv.instance_markers(instances, stamp=1.0, frame_id="base")
    spheres = [m for m in markers if m.type == Marker.SPHERE]
    texts = [m for m in markers if m.type == Marker.TEXT_VIEW_FACING]
    assert [m.id for m in spheres] == [3, 11, 0]
    assert texts[0].text == "cube s=0.90 u=0.10" and texts[1].text == "#11 s=0.50 u=0.50"
    np.testing.assert_allclose([spheres[0].pose.position.x, spheres[0].pose.position.y],
                               instances.centroids[0, :2], rtol=1e-6)
    # Same id -> same colour on every step; ids 3 and 13 share a palette slot, 3 and 11 do not.
    assert conv.instance_color(3).r == conv.instance_color(13).r
    assert (spheres[0].color.r, spheres[0].color.g) != (spheres[1].color.r, spheres[1].color.g)
    path = np.cumsum(rng.standard_normal((5, 3)), axis=0)
    line = conv.path_marker(path, stamp=1.0, frame_id="base")
    assert line.type == Marker.LINE_STRIP
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in line.points], path)
    array = wire(conv.marker_array(markers + [line]))
    assert array.markers[0].action == Marker.DELETEALL and len(array.markers) == len(markers) + 2


def test_diagnostics_round_trip():
    statuses = [Status("vla3d/camera/front/color", Level.WARN, "rate 3.0 Hz", {"rate_hz": "3.00"}),
                Status("vla3d/action", Level.OK, "OK")]
    msg = wire(conv.diagnostics_to_msg(statuses, stamp=2.0, hardware_id="sim"))
    assert [conv.msg_to_status(m) for m in msg.status] == statuses
    assert msg.status[0].level == bytes([1]) and msg.status[0].hardware_id == "sim"


def test_markers_use_the_shared_palette_and_planned_path():
    from vla3d_ros.types import EE_DELTA_ACTION_NAMES, INSTANCE_PALETTE, ActionChunk

    # RViz and the demo's image overlay show a probe in the same colour.
    for probe_id in (0, 7, 12):
        color = conv.instance_color(probe_id)
        np.testing.assert_allclose([color.r, color.g, color.b], INSTANCE_PALETTE[probe_id % len(INSTANCE_PALETTE)],
                                   rtol=1e-6)
    actions = np.zeros((4, 7), np.float32)
    actions[:, 0], actions[:, 2] = 0.01, -0.02
    chunk = ActionChunk(actions=actions, dimension_names=EE_DELTA_ACTION_NAMES, stamp=1.0, step_period=0.1)
    line = conv.planned_path_marker(chunk, np.array([0.5, 0.0, 0.3]), stamp=1.0, frame_id="base")
    points = np.array([[p.x, p.y, p.z] for p in line.points])
    np.testing.assert_allclose(points, chunk.planned_ee_positions(np.array([0.5, 0.0, 0.3])))
    np.testing.assert_allclose(points[-1], [0.54, 0.0, 0.22], atol=1e-6)
    joints = ActionChunk(actions=actions, dimension_names=tuple(f"j{i}" for i in range(7)), stamp=1.0,
                         step_period=0.1)
    with pytest.raises(conv.ConversionError, match=r"dx, dy, dz"):
        conv.planned_path_marker(joints, np.zeros(3), stamp=1.0, frame_id="base")
