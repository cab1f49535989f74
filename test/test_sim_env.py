"""TabletopEnv: observation contract, controller semantics, determinism, experts, success detectors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import vla3d_ros.sim  # noqa: F401  (sets MUJOCO_GL before mujoco is imported)
from vla3d_ros.sim.env import TabletopEnv
from vla3d_ros.sim.experts import make_expert
from vla3d_ros.sim.rollout import run_expert_episode
from vla3d_ros.sim.tasks import TASKS
from vla3d_ros.types import EE_DELTA_ACTION_NAMES


@pytest.fixture(scope="module")
def env():
    environment = TabletopEnv("pick_place_bowl", image_size=(48, 64))
    yield environment
    environment.close()


def test_observation_contract(env):
    obs = env.reset(seed=1)
    V = len(env.camera_names)
    assert env.camera_names == ("front", "side", "wrist") and obs.camera_names == env.camera_names
    assert obs.rgb.shape == (V, 48, 64, 3) and obs.rgb.dtype == np.uint8
    assert obs.depth.shape == (V, 48, 64) and obs.depth.dtype == np.float32
    assert obs.intrinsics.shape == (V, 3, 3) and obs.T_base_cam.shape == (V, 4, 4)
    assert obs.joint_positions.shape == (9,) and len(obs.joint_names) == 9
    assert obs.gripper == pytest.approx(1.0, abs=0.02)          # starts open
    np.testing.assert_allclose(np.linalg.norm(obs.ee_pose[3:]), 1.0, atol=1e-5)
    for T in obs.T_base_cam:                                   # proper rotations
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)
        assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0)
    seg = env.segmentation()
    assert seg.shape == (V, 48, 64) and seg.dtype == np.int32
    ids = env.object_ids()
    assert set(np.unique(seg)) <= {0, *ids.values()}
    assert len(set(np.unique(seg[0])) - {0}) >= 3               # the front camera sees the objects
    assert env.instruction == obs.instruction and obs.instruction.count(" ") >= 3
    assert not env.success()                                    # never solved at reset
    assert env.control_period == pytest.approx(0.1)


def test_actions_move_the_tool_by_the_commanded_delta(env):
    obs = env.reset(seed=2, render=False)
    start = obs.ee_pose[:3].copy()
    for _ in range(5):   # stays inside the reachable workspace (the home pose is near full reach in +x +z)
        obs = env.step(np.array([-0.01, -0.02, -0.015, 0, 0, 0, 1.0]), render=False)
    for _ in range(3):                                           # zero action holds the pose
        obs = env.step(np.zeros(7) + [0, 0, 0, 0, 0, 0, 1.0], render=False)
    np.testing.assert_allclose(obs.ee_pose[:3] - start, [-0.05, -0.1, -0.075], atol=0.003)
    # deltas beyond the per-step limit are clipped (0.02 m per axis)
    before = obs.ee_pose[:3].copy()
    env.step(np.array([-0.5, 0, 0, 0, 0, 0, 1.0]), render=False)
    obs = env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]), render=False)
    assert obs.ee_pose[0] - before[0] == pytest.approx(-0.02, abs=0.003)
    # yaw delta rotates the tool about the base z axis
    yaw_before = np.arctan2(env.ee_rotation()[1, 0], env.ee_rotation()[0, 0])
    for _ in range(3):
        env.step(np.array([0, 0, 0, 0, 0, 0.1, 1.0]), render=False)
    env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]), render=False)
    yaw_after = np.arctan2(env.ee_rotation()[1, 0], env.ee_rotation()[0, 0])
    assert np.angle(np.exp(1j * (yaw_after - yaw_before))) == pytest.approx(0.3, abs=0.02)
    # closing the gripper closes the fingers
    for _ in range(3):
        obs = env.step(np.zeros(7), render=False)
    assert obs.gripper < 0.05


def test_bad_actions_are_rejected(env):
    env.reset(seed=0, render=False)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(6))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.nan, 0, 0, 0, 0, 0, 1]))
    assert len(EE_DELTA_ACTION_NAMES) == 7


def test_reset_is_deterministic_given_the_seed(env):
    a = env.reset(seed=5)
    seg_a = env.segmentation().copy()
    instruction_a, ids_a = env.instruction, env.object_ids()
    env.reset(seed=6)
    b = env.reset(seed=5)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(seg_a, env.segmentation())
    assert instruction_a == env.instruction and ids_a == env.object_ids()
    for _ in range(3):
        a2 = env.step(np.array([0.01, 0.01, -0.01, 0, 0, 0.05, 0.5]))
    env.reset(seed=5)
    for _ in range(3):
        b2 = env.step(np.array([0.01, 0.01, -0.01, 0, 0, 0.05, 0.5]))
    np.testing.assert_array_equal(a2.joint_positions, b2.joint_positions)
    np.testing.assert_array_equal(a2.rgb, b2.rgb)


def test_goal_variant_out_of_range_is_refused(env):
    count = len(env.task.goal_variants(env.task.sample(np.random.default_rng(0))))
    with pytest.raises(ValueError, match=rf"goal_variant must be in \[0, {count}\)"):
        env.reset(seed=5, goal_variant=count)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_expert_solves_and_success_detector_agrees(task):
    env = TabletopEnv(task, image_size=(32, 32))
    try:
        env.reset(seed=11, render=False)
        assert not env.success()
        success, steps = run_expert_episode(env, seed=11, render=False)
        assert success and steps <= env.task.max_steps
        assert env.success()
    finally:
        env.close()


def test_make_expert_needs_a_known_task_and_a_reset_env():
    env = TabletopEnv("stack_cubes", image_size=(16, 16))
    try:
        with pytest.raises(RuntimeError, match="reset"):
            make_expert("stack_cubes", env)
        env.reset(seed=0, render=False)
        with pytest.raises(ValueError, match="no expert"):
            make_expert("fold_laundry", env)
    finally:
        env.close()
    with pytest.raises(ValueError, match="unknown task"):
        TabletopEnv("fold_laundry")


def test_place_jitter_releases_off_centre_inside_the_bowl(env, tmp_path):
    """With place_jitter the expert releases at a seeded point of the disc around the bowl's centre:
    within the radius, the same for the same episode, different across episodes, recorded in the
    episode's meta, and the cube still lands in the bowl. Bad values fail in one line."""
    import json

    from vla3d_ros.sim.rollout import EpisodeGenerator, GenerationConfig

    offsets = []
    for seed in (3, 4, 5, 6):
        env.reset(seed=seed, render=False)
        first, again = make_expert("pick_place_bowl", env, 0.025), make_expert("pick_place_bowl", env, 0.025)
        np.testing.assert_array_equal(first.place_offset, again.place_offset)
        assert np.linalg.norm(first.place_offset) <= 0.025
        offsets.append(first.place_offset)
        success, _ = run_expert_episode(env, seed=seed, render=False, place_jitter=0.025)
        assert success
        cube = env.object_position(env.instance.roles["target"])[:2]
        released = env.object_position("bowl")[:2] + first.place_offset
        assert np.linalg.norm(cube - released) < 0.01   # it fell where the jittered release put it
    assert len({tuple(np.round(o, 6)) for o in offsets}) == 4
    generator = EpisodeGenerator(GenerationConfig("pick_place_bowl", 1, out=tmp_path, image_size=(16, 16),
                                                  place_jitter=0.02))
    try:
        path = generator.generate(0).path
    finally:
        generator.close()
    meta = json.loads((Path(path) / "meta.json").read_text())
    assert meta["place_jitter"] == 0.02 and np.linalg.norm(meta["place_offset"]) <= 0.02
    with pytest.raises(ValueError, match=r"place_jitter must be in \[0, 0.03\] m, got 0.05"):
        GenerationConfig("pick_place_bowl", 1, place_jitter=0.05)
    with pytest.raises(ValueError, match="task 'push_to_zone' has no bowl"):
        GenerationConfig("push_to_zone", 1, place_jitter=0.02)
    env.reset(seed=0, render=False)
    with pytest.raises(ValueError, match="'push_to_zone' has no place"):
        make_expert("push_to_zone", env, 0.02)


def test_tail_steps_record_the_release_past_the_success(tmp_path):
    """With tail_steps the recording goes on past the success: N more steps, and for pick_place_bowl
    they are the release and retreat (gripper open), so chunks ending at the release are trained
    past it. The episode stays a success; a negative tail is refused in one line."""
    import json

    from vla3d_ros.sim.rollout import EpisodeGenerator, GenerationConfig

    lengths, gripper = {}, {}
    for tail in (0, 5):
        generator = EpisodeGenerator(GenerationConfig("pick_place_bowl", 1, out=tmp_path / str(tail),
                                                      image_size=(16, 16), tail_steps=tail))
        try:
            result = generator.generate(0)
        finally:
            generator.close()
        assert result.success
        meta = json.loads((Path(result.path) / "meta.json").read_text())
        assert meta["success"]
        lengths[tail] = meta["num_steps"]
        gripper[tail] = np.load(Path(result.path) / "actions.npy")[:, -1]
    assert lengths[5] == lengths[0] + 5
    np.testing.assert_array_equal(gripper[5][:lengths[0] - 1], gripper[0][:-1])   # the same episode up to the success
    assert np.all(gripper[5][-6:] == 1.0)   # released and retreating, open
    with pytest.raises(ValueError, match="tail_steps must be >= 0, got -1"):
        GenerationConfig("pick_place_bowl", 1, tail_steps=-1)
