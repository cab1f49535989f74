"""Episode format: write -> read round trip, atomic publication, validation (no simulator needed)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vla3d_ros.data.episodes import (
    EpisodeReader,
    EpisodeWriter,
    depth_from_millimetres,
    depth_to_millimetres,
    list_episodes,
)
from vla3d_ros.types import Observation

CAMERAS = ("front", "side")
H, W = 24, 32


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _smooth_image(rng: np.random.Generator) -> np.ndarray:
    """A smooth colour image (JPEG-friendly) so lossy error bounds are meaningful."""
    v, u = np.mgrid[0:H, 0:W]
    base = rng.uniform(0, 1, size=3)
    image = 40 + 170 * np.stack([u / W * base[0], v / H * base[1], np.full((H, W), base[2])], -1)
    return image.astype(np.uint8)


def _observation(rng: np.random.Generator, t: int) -> Observation:
    depth = rng.uniform(0.2, 2.0, size=(len(CAMERAS), H, W)).astype(np.float32)
    depth[0, 0, :5] = np.nan          # invalid pixels
    depth[1, 1, :3] = 0.0
    depth[1, 2, :2] = np.inf
    T = np.tile(np.eye(4), (len(CAMERAS), 1, 1))
    T[:, :3, 3] = rng.normal(size=(len(CAMERAS), 3))
    K = np.tile(np.array([[30.0, 0, 15.5], [0, 30.0, 11.5], [0, 0, 1]]), (len(CAMERAS), 1, 1))
    K[:, 0, 0] += t * 0.01            # intrinsics may change per step (camera perturbations)
    return Observation(
        camera_names=CAMERAS, rgb=np.stack([_smooth_image(rng) for _ in CAMERAS]), depth=depth,
        intrinsics=K, T_base_cam=T, joint_positions=rng.normal(size=9).astype(np.float32),
        ee_pose=rng.normal(size=7).astype(np.float32), gripper=float(rng.uniform()),
        instruction="put the red cube in the bowl", stamp=0.1 * t, joint_names=tuple(f"j{i}" for i in range(9)))


def _write(root, index, rng, steps=4, rgb_format="jpeg", segmentation=True):
    observations, actions, segmentations = [], [], []
    meta = {"task": "pick_place_bowl", "step_period": 0.1, "seed": 7, "perturbations": ["light:2"],
            "object_ids": {"red cube": 1}}
    with EpisodeWriter(root, index, meta, CAMERAS, rgb_format=rgb_format) as writer:
        for t in range(steps):
            obs = _observation(rng, t)
            action = rng.normal(size=7).astype(np.float32)
            seg = rng.integers(0, 6, size=(len(CAMERAS), H, W)) if segmentation else None
            writer.add_step(obs, action, seg)
            observations.append(obs)
            actions.append(action)
            segmentations.append(seg)
        path = writer.close(success=True)
    return path, observations, np.stack(actions), segmentations


def test_round_trip_is_exact_except_jpeg(tmp_path, rng):
    path, observations, actions, segmentations = _write(tmp_path, 3, rng)
    reader = EpisodeReader(path)
    assert len(reader) == 4
    assert reader.meta["task"] == "pick_place_bowl" and reader.meta["success"] is True
    assert reader.meta["camera_names"] == list(CAMERAS) and reader.meta["image_size"] == [H, W]
    assert reader.meta["perturbations"] == ["light:2"] and reader.meta["object_ids"] == {"red cube": 1}
    np.testing.assert_array_equal(reader.actions(), actions)
    for t, obs in enumerate(observations):
        got = reader.observation(t)
        expected_depth = np.where(np.isfinite(obs.depth) & (obs.depth > 0), np.round(obs.depth * 1000) / 1000, np.nan)
        np.testing.assert_allclose(got.depth, expected_depth, atol=1e-6)   # exact at mm resolution
        np.testing.assert_array_equal(np.isnan(got.depth), ~(np.isfinite(obs.depth) & (obs.depth > 0)))
        np.testing.assert_array_equal(got.intrinsics, obs.intrinsics)
        np.testing.assert_array_equal(got.T_base_cam, obs.T_base_cam)
        np.testing.assert_array_equal(got.joint_positions, obs.joint_positions)
        np.testing.assert_array_equal(got.ee_pose, obs.ee_pose)
        np.testing.assert_array_equal(got.state, obs.state)
        assert got.gripper == pytest.approx(obs.gripper, abs=1e-7)
        assert got.instruction == obs.instruction and got.stamp == pytest.approx(obs.stamp)
        assert got.joint_names == obs.joint_names
        np.testing.assert_array_equal(reader.segmentation(t), segmentations[t])
        np.testing.assert_array_equal(reader.action(t), actions[t])
        error = np.abs(got.rgb.astype(int) - obs.rgb.astype(int))
        assert error.mean() < 2.0 and got.rgb.shape == obs.rgb.shape      # JPEG q95 on smooth images
    np.testing.assert_array_equal(reader.states()[2], observations[2].state)


def test_png_rgb_is_lossless_and_random_access_any_order(tmp_path, rng):
    path, observations, _, _ = _write(tmp_path, 0, rng, steps=5, rgb_format="png")
    reader = EpisodeReader(path)
    for t in (4, 0, 2, -1):
        np.testing.assert_array_equal(reader.rgb(t), observations[t].rgb)
    with pytest.raises(IndexError, match="out of range"):
        reader.observation(5)


def test_depth_millimetre_encoding_known_values():
    depth = np.array([0.0, -1.0, np.nan, np.inf, 0.0004, 0.0006, 1.2345, 65.534, 70.0], np.float32)
    mm = depth_to_millimetres(depth)
    np.testing.assert_array_equal(mm, [0, 0, 0, 0, 0, 1, 1234, 65534, 0])
    back = depth_from_millimetres(mm)
    assert np.isnan(back[[0, 1, 2, 3, 4, 8]]).all()
    np.testing.assert_allclose(back[[5, 6, 7]], [0.001, 1.234, 65.534], rtol=1e-6)


def test_episodes_without_segmentation(tmp_path, rng):
    path, _, _, _ = _write(tmp_path, 1, rng, segmentation=False)
    reader = EpisodeReader(path)
    assert reader.segmentation(0) is None and reader.meta["has_segmentation"] is False


def test_atomic_publication_and_listing(tmp_path, rng):
    _write(tmp_path, 2, rng)
    _write(tmp_path, 10, rng)
    # an exception inside the block publishes nothing and leaves no temporary directory
    with pytest.raises(RuntimeError, match="boom"):
        with EpisodeWriter(tmp_path, 5, {"task": "t", "step_period": 0.1}, CAMERAS) as writer:
            writer.add_step(_observation(rng, 0), np.zeros(7))
            raise RuntimeError("boom")
    # a leftover temporary directory (interrupted run) is not an episode
    (tmp_path / ".episode_000007.tmp").mkdir()
    assert [p.name for p in list_episodes(tmp_path)] == ["episode_000002", "episode_000010"]
    assert not (tmp_path / ".episode_000005.tmp").exists()
    with pytest.raises(FileExistsError):
        EpisodeWriter(tmp_path, 2, {"task": "t", "step_period": 0.1}, CAMERAS)
    # the next writer of an interrupted index replaces its leftover
    _write(tmp_path, 7, rng)
    assert [p.name for p in list_episodes(tmp_path)][-2:] == ["episode_000007", "episode_000010"]
    assert list_episodes(tmp_path / "missing") == []


def test_meta_is_json_and_no_pickle(tmp_path, rng):
    path, _, _, _ = _write(tmp_path, 0, rng)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format_version"] == 1 and meta["num_steps"] == 4 and meta["step_period"] == 0.1
    for npy in path.glob("*.npy"):
        np.load(npy, allow_pickle=False)   # raises if an object array was stored


def test_bad_input_is_rejected_with_the_value(tmp_path, rng):
    with pytest.raises(ValueError, match="step_period"):
        EpisodeWriter(tmp_path, 0, {"task": "t"}, CAMERAS)
    with pytest.raises(ValueError, match="rgb_format"):
        EpisodeWriter(tmp_path, 0, {"task": "t", "step_period": 0.1}, CAMERAS, rgb_format="gif")
    writer = EpisodeWriter(tmp_path, 0, {"task": "t", "step_period": 0.1}, CAMERAS)
    with pytest.raises(ValueError, match=r"\(7,\)"):
        writer.add_step(_observation(rng, 0), np.zeros(6))
    with pytest.raises(ValueError, match="instance ids"):
        writer.add_step(_observation(rng, 0), np.zeros(7), np.full((2, H, W), 300))
    writer.add_step(_observation(rng, 0), np.zeros(7), None)
    with pytest.raises(ValueError, match="every step or for none"):
        writer.add_step(_observation(rng, 1), np.zeros(7), np.zeros((2, H, W), int))
    other = _observation(rng, 1)
    other.instruction = "something else"
    with pytest.raises(ValueError, match="instruction changed"):
        writer.add_step(other, np.zeros(7))
    writer.abort()
    assert list_episodes(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="not an episode"):
        EpisodeReader(tmp_path)
