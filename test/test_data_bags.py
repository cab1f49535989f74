"""Episodes <-> ROS 2 bags with rosbags (MCAP and sqlite3), no rclpy in the code under test."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vla3d_ros.data.bags import (
    ACTION_CHUNK_TYPE,
    BagReader,
    camera_info_topic,
    depth_topic,
    is_bag,
    rgb_topic,
    typestore,
    write_bag,
)
from vla3d_ros.geometry import euler_xyz_to_matrix
from vla3d_ros.types import EE_DELTA_ACTION_NAMES, Observation

CAMERAS = ("front", "side", "wrist")


class MemoryEpisode:
    """An episode held in memory with EpisodeReader's interface (meta, len, observation, ...)."""

    def __init__(self, num_steps: int = 4, height: int = 12, width: int = 16, seed: int = 0,
                 with_segmentation: bool = True, with_depth: bool = True,
                 constant_instruction: bool = False):
        rng = np.random.default_rng(seed)
        views = len(CAMERAS)
        self.meta = {"task": "stack", "camera_names": list(CAMERAS), "step_period": 0.05,
                     "action_names": list(EE_DELTA_ACTION_NAMES), "seed": seed, "success": True,
                     "perturbations": ["light:2"]}
        static = np.tile(np.eye(4), (views, 1, 1))
        static[:, :3, 3] = rng.normal(size=(views, 3))
        K = np.tile(np.array([[20.0, 0, 7.5], [0, 21.0, 5.5], [0, 0, 1]]), (views, 1, 1))
        self.observations, self.actions, self.segmentations = [], [], []
        for t in range(num_steps):
            T = static.copy()                                   # the wrist camera moves
            T[2, :3, :3] = euler_xyz_to_matrix(0.1 * t, -0.2, 0.3 + t)
            T[2, :3, 3] += 0.01 * t
            # Whole millimetres, as episodes store depth (the bag itself keeps any float32).
            depth = (rng.integers(200, 2000, (views, height, width)) / 1000.0).astype(np.float32)
            depth[0, 0, :3] = np.nan                              # invalid pixels survive
            quaternion = rng.normal(size=4)
            self.observations.append(Observation(
                camera_names=CAMERAS,
                rgb=rng.integers(0, 256, (views, height, width, 3), dtype=np.uint8),
                depth=depth if with_depth else None,
                intrinsics=K,
                T_base_cam=T,
                joint_positions=rng.normal(size=7).astype(np.float32),
                ee_pose=np.concatenate([rng.normal(size=3), quaternion / np.linalg.norm(quaternion)]
                                       ).astype(np.float32),
                gripper=float(rng.uniform()),
                instruction="stack the cubes" if t < 2 or constant_instruction else "now the blue one",
                stamp=3.0 + 0.05 * t,
                joint_names=tuple(f"joint{i}" for i in range(7)),
            ))
            self.actions.append(rng.normal(size=7).astype(np.float32))
            self.segmentations.append(
                rng.integers(0, 4, (views, height, width)).astype(np.int32) if with_segmentation else None)

    def __len__(self):
        return len(self.observations)

    def observation(self, t):
        return self.observations[t]

    def action(self, t):
        return self.actions[t]

    def segmentation(self, t):
        return self.segmentations[t]


def assert_same_step(original_obs, action, segmentation, step, exact_rgb=True):
    """Everything bit-exact except the message representations' own limits (module docstring)."""
    restored = step.observation
    for name in ("rgb", "depth", "intrinsics", "joint_positions", "ee_pose") if exact_rgb else (
            "depth", "intrinsics", "joint_positions", "ee_pose"):
        a, b = getattr(original_obs, name), getattr(restored, name)
        if a is None:
            assert b is None
            continue
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    np.testing.assert_allclose(restored.T_base_cam, original_obs.T_base_cam, rtol=0, atol=1e-14)
    assert restored.camera_names == original_obs.camera_names
    assert restored.gripper == original_obs.gripper
    assert restored.instruction == original_obs.instruction
    assert restored.joint_names == original_obs.joint_names
    assert abs(restored.stamp - original_obs.stamp) <= 0.5e-9            # ROS time: integer ns
    assert step.action.dtype == np.float32
    np.testing.assert_array_equal(step.action, action)
    if segmentation is None:
        assert step.segmentation is None
    else:
        np.testing.assert_array_equal(step.segmentation, segmentation)
        assert step.segmentation.dtype == np.int32


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_is_lossless(tmp_path, storage):
    episode = MemoryEpisode()
    path = write_bag(episode, tmp_path / "bag", storage=storage)
    assert is_bag(path) and not list(tmp_path.glob(".*partial"))
    with BagReader(path) as reader:
        assert reader.meta == episode.meta and reader.camera_names == CAMERAS
        steps = list(reader)
    assert len(steps) == len(episode)
    for t, step in enumerate(steps):
        assert_same_step(episode.observation(t), episode.action(t), episode.segmentation(t), step)


def test_compressed_rgb_and_millimetre_depth(tmp_path):
    episode = MemoryEpisode(with_segmentation=False)
    png = write_bag(episode, tmp_path / "png", rgb_format="png", depth_format="16UC1")
    jpeg = write_bag(episode, tmp_path / "jpeg", rgb_format="jpeg")
    with BagReader(png) as reader:
        for t, step in enumerate(reader):
            original = episode.observation(t)
            np.testing.assert_array_equal(step.observation.rgb, original.rgb)       # PNG: lossless
            depth = step.observation.depth
            assert np.array_equal(np.isnan(depth), np.isnan(original.depth))
            assert np.nanmax(np.abs(depth - original.depth)) <= 0.0005 + 1e-6       # 1 mm steps
            assert step.segmentation is None
    with BagReader(jpeg) as reader:
        for t, step in enumerate(reader):
            assert_same_step(episode.observation(t), episode.action(t), None, step, exact_rgb=False)
            error = np.abs(step.observation.rgb.astype(int) - episode.observation(t).rgb.astype(int))
            assert error.mean() < 60                          # lossy, but the same image


def test_rgb_only_episode(tmp_path):
    episode = MemoryEpisode(with_depth=False, with_segmentation=False, num_steps=2)
    with BagReader(write_bag(episode, tmp_path / "bag")) as reader:
        for t, step in enumerate(reader):
            assert_same_step(episode.observation(t), episode.action(t), None, step)


def test_bag_uses_standard_topics_schemas_and_tf(tmp_path):
    from rosbags.rosbag2 import Reader
    from rosbags.rosbag2.storage_mcap import McapReader

    episode = MemoryEpisode(num_steps=3)
    path = write_bag(episode, tmp_path / "bag")
    mcap = McapReader(path / "bag.mcap")
    mcap.open()
    try:
        schemas = {schema.name: schema for schema in mcap.schemas.values()}
    finally:
        mcap.close()
    assert {s.encoding for s in schemas.values()} == {"ros2msg"}
    assert schemas[ACTION_CHUNK_TYPE].data.startswith("std_msgs/Header header")
    assert {"sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo", "sensor_msgs/msg/JointState",
            "tf2_msgs/msg/TFMessage", "std_msgs/msg/String"} <= set(schemas)
    store = typestore()
    with Reader(path) as reader:
        topics = {c.topic: c for c in reader.connections}
        assert {rgb_topic("front", "raw"), camera_info_topic("wrist"), depth_topic("side"),
                "/joint_states", "/vla3d/instruction", "/vla3d/action_chunk"} <= set(topics)
        counts = {topic: c.msgcount for topic, c in topics.items()}
        assert counts["/tf_static"] == 1 and counts["/tf"] == 3 and counts["/vla3d/instruction"] == 2
        messages = {}
        for connection, _, raw in reader.messages([topics["/tf_static"], topics["/tf"]]):
            messages.setdefault(connection.topic, store.deserialize_cdr(raw, connection.msgtype))
    static = {tf.child_frame_id for tf in messages["/tf_static"].transforms}
    dynamic = {tf.child_frame_id for tf in messages["/tf"].transforms}
    assert static == {"front_color_optical_frame", "side_color_optical_frame"}
    assert dynamic == {"ee_link", "wrist_color_optical_frame"}
    assert {tf.header.frame_id for tf in messages["/tf"].transforms} == {"base_link"}


def test_messages_deserialise_with_rclpy(tmp_path):
    # What rosbag2 / ros2 bag play would do with the raw CDR bytes of our bag.
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import CameraInfo

    from vla3d_ros.msg import ActionChunk

    episode = MemoryEpisode(num_steps=2)
    path = write_bag(episode, tmp_path / "bag")
    with Reader(path) as reader:
        wanted = [c for c in reader.connections
                  if c.topic in ("/vla3d/action_chunk", camera_info_topic("front"))]
        first = {}
        for connection, _, raw in reader.messages(wanted):
            first.setdefault(connection.topic, raw)
    chunk = deserialize_message(first["/vla3d/action_chunk"], ActionChunk)
    assert (chunk.rows, chunk.cols) == (1, 7)
    assert tuple(chunk.dimension_names) == EE_DELTA_ACTION_NAMES
    np.testing.assert_array_equal(np.asarray(chunk.data, np.float32), episode.action(0))
    assert chunk.step_period.nanosec == 50_000_000
    info = deserialize_message(first[camera_info_topic("front")], CameraInfo)
    np.testing.assert_array_equal(np.asarray(info.k).reshape(3, 3), episode.observation(0).intrinsics[0])
    assert info.header.frame_id == "front_color_optical_frame"


def test_bad_inputs_fail_clearly(tmp_path):
    episode = MemoryEpisode(num_steps=2)
    with pytest.raises(ValueError, match="'zip'"):
        write_bag(episode, tmp_path / "a", storage="zip")
    write_bag(episode, tmp_path / "a")
    with pytest.raises(FileExistsError, match="not overwriting"):
        write_bag(episode, tmp_path / "a")
    episode.observations[1].stamp = episode.observations[0].stamp
    with pytest.raises(ValueError, match="strictly increasing"):
        write_bag(episode, tmp_path / "b")
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".*partial"))
    with pytest.raises(ValueError, match="not a rosbag2 bag"):
        BagReader(tmp_path)


def _write_episode(root, source: MemoryEpisode, index: int, rgb_format: str) -> Path:
    from vla3d_ros.data.episodes import EpisodeWriter

    with EpisodeWriter(root, index, source.meta, CAMERAS, rgb_format=rgb_format) as writer:
        for t in range(len(source)):
            writer.add_step(source.observation(t), source.action(t), source.segmentation(t))
        return writer.close(success=True)


def _assert_same_episode(a, b, exact_rgb: bool):
    assert a.meta == b.meta and len(a) == len(b)
    for t in range(len(a)):
        step = BagStepView(b, t)
        assert_same_step(a.observation(t), a.action(t), a.segmentation(t), step, exact_rgb=exact_rgb)
        np.testing.assert_array_equal(a.depth_millimetres(t), b.depth_millimetres(t))


class BagStepView:
    """An episode step shaped like a BagStep (to reuse `assert_same_step`)."""

    def __init__(self, reader, t):
        self.observation, self.action, self.segmentation = (
            reader.observation(t), reader.action(t), reader.segmentation(t))


@pytest.mark.parametrize("storage, rgb_format", [("mcap", "png"), ("sqlite3", "jpeg")])
def test_episode_bag_episode_round_trip(tmp_path, storage, rgb_format):
    from vla3d_ros.data.bags import bag_to_episode
    from vla3d_ros.data.episodes import EpisodeReader

    source = MemoryEpisode(constant_instruction=True)
    original = EpisodeReader(_write_episode(tmp_path / "episodes", source, 7, rgb_format))
    bag = write_bag(original, tmp_path / "bag", storage=storage)
    restored = EpisodeReader(bag_to_episode(bag, tmp_path / "restored", 7))
    # PNG episodes round-trip bit-exactly; JPEG ones are re-encoded (lossy), all else is exact.
    _assert_same_episode(original, restored, exact_rgb=rgb_format == "png")
    if rgb_format == "jpeg":
        difference = np.abs(original.rgb(0).astype(int) - restored.rgb(0).astype(int))
        assert difference.mean() < 20


def test_convert_command_picks_the_direction(tmp_path, capsys):
    from vla3d_ros.cli import main
    from vla3d_ros.data.episodes import EpisodeReader, list_episodes

    for index in range(2):
        _write_episode(tmp_path / "episodes", MemoryEpisode(num_steps=2, seed=index, constant_instruction=True),
                       index, "png")
    assert main(["convert", str(tmp_path / "episodes"), str(tmp_path / "bags"), "--format", "sqlite3"]) == 0
    bags = sorted(p.name for p in (tmp_path / "bags").iterdir())
    assert bags == ["episode_000000", "episode_000001"]
    assert (tmp_path / "bags" / "episode_000001" / "episode_000001.db3").is_file()
    assert main(["convert", str(tmp_path / "bags"), str(tmp_path / "back")]) == 0
    restored = list_episodes(tmp_path / "back")
    assert [p.name for p in restored] == bags
    for original, back in zip(list_episodes(tmp_path / "episodes"), restored):
        _assert_same_episode(EpisodeReader(original), EpisodeReader(back), exact_rgb=True)
    # One episode directory on its own converts too; a path holding neither fails clearly.
    assert main(["convert", str(restored[0]), str(tmp_path / "single")]) == 0
    assert (tmp_path / "single" / "episode_000000" / "metadata.yaml").is_file()
    assert main(["convert", str(tmp_path / "single" / "episode_000000" / "metadata.yaml"),
                 str(tmp_path / "x")]) == 2
    assert "neither bags nor episodes" in capsys.readouterr().err
