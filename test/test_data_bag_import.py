"""A robot's bag (as `ros2 bag record` writes it, quirks included) -> episodes: `vla3d convert --config`.

The bag comes from `robot_bag_fixtures` with an analytic ground truth, so every value the
importer derives (K, T_base_cam through TF chains, EE pose, gripper, actions) is checked against
the truth, not just its shape.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from robot_bag_fixtures import (
    CONFIG, EE_VELOCITY, EE_YAW_RATE, JOINTS, K_FRONT, K_WRIST, T_BASE_FRONT, T_EE_WRIST, T_base_ee,
    gripper_opening, robot_config, write_robot_bag,
)

from vla3d_ros.data.bag_import import RobotBag, TransformTree, import_bags, pose_of
from vla3d_ros.data.episodes import EpisodeReader, list_episodes

START = 100.0


@pytest.fixture(scope="module")
def robot_bag(tmp_path_factory) -> Path:
    return write_robot_bag(tmp_path_factory.mktemp("robot") / "bag")


def read_steps(bag: Path, **convert):
    with RobotBag(bag, robot_config(**convert)) as robot:
        episodes = robot.episodes()
        steps = list(robot.steps(episodes))
        return episodes, steps, robot.notes


def test_steps_are_resampled_at_the_step_period_with_exact_geometry(robot_bag):
    episodes, steps, notes = read_steps(robot_bag)
    assert len(episodes) == 1
    plan = episodes[0].plan
    stamps = np.array([obs.stamp for _, obs, _ in steps])
    # 2 s at 0.1 s from the first synchronised set (front 30 Hz, wrist 15 Hz, jittered stamps).
    assert len(steps) == 20
    np.testing.assert_allclose(np.diff(stamps), 0.1, atol=1e-9)
    assert all(abs(step.set_stamp - step.stamp) <= 0.05 for step in plan)
    for (_, obs, action), step in zip(steps, plan):
        assert obs.camera_names == ("front", "wrist")          # /extra is not configured: ignored
        np.testing.assert_array_equal(obs.intrinsics, np.stack([K_FRONT, K_WRIST]))
        # TF chains (leading '/' stripped): base <- front static; base <- /link1 <- ee <- /wrist.
        np.testing.assert_allclose(obs.T_base_cam[0], T_BASE_FRONT, atol=1e-9)
        np.testing.assert_allclose(obs.T_base_cam[1], T_base_ee(step.set_stamp - START) @ T_EE_WRIST, atol=1e-6)
        np.testing.assert_allclose(obs.ee_pose, pose_of(T_base_ee(obs.stamp - START)), atol=1e-6)
        assert obs.joint_names == JOINTS
        # Joint states at 100 Hz: the nearest is at most 5 ms away from the step.
        np.testing.assert_allclose(obs.joint_positions, 0.1 * np.arange(7) + 0.05 * (obs.stamp - START), atol=3e-4)
        assert obs.gripper == pytest.approx(gripper_opening(obs.stamp - START), abs=0.003)
        assert obs.instruction == CONFIG["instruction"]
    _, first, _ = steps[0]
    # Colour: front is bgr8 with row padding (red patch), wrist JPEG (blue patch).
    front, wrist = first.rgb[0].astype(int), first.rgb[1].astype(int)
    assert front[16, :, 0].max() > 180 and front[16, :, 2].max() < 80
    assert wrist[16, :, 2].max() > 150 and wrist[16, :, 0].max() < 110
    # Depth: 16UC1 holes (0 mm) and 32FC1 NaN become NaN; valid values in metres.
    assert np.all(np.isnan(first.depth[0, 0, :5])) and np.all(np.isnan(first.depth[1, 5, :3]))
    assert np.nanmin(first.depth) >= 0.8 - 1e-3 and np.nanmax(first.depth) < 1.5
    assert sum("distortion" in note and "used as published" in note for note in notes) == 2


def test_actions_from_ee_poses_and_from_servo_commands_agree_with_the_motion(robot_bag):
    _, from_poses, _ = read_steps(robot_bag)
    _, from_commands, _ = read_steps(robot_bag, actions="command")
    period = 0.1
    expected = np.concatenate([EE_VELOCITY * period, [0.0, 0.0, EE_YAW_RATE * period]])
    for (_, obs, pose_action), (_, _, command_action) in zip(from_poses[:-1], from_commands[:-1]):
        np.testing.assert_allclose(pose_action[:6], expected, atol=1e-6)
        np.testing.assert_allclose(command_action[:6], expected, atol=1e-6)   # twist x period
        # Gripper target: the next step's opening.
        assert pose_action[6] == pytest.approx(gripper_opening(obs.stamp + period - START), abs=0.003)
    np.testing.assert_array_equal(from_poses[-1][2][:6], 0.0)                  # the last step holds


def test_actions_from_ros2_control_joint_trajectories(robot_bag):
    import dataclasses

    from robot_bag_fixtures import TRAJECTORY_TOPIC, joint_targets

    config = robot_config(actions="command")
    output = dataclasses.replace(config.output, adapter="ros2_control", ros2_control=dataclasses.replace(
        config.output.ros2_control, topic=TRAJECTORY_TOPIC, joint_names=JOINTS))
    with RobotBag(robot_bag, dataclasses.replace(config, output=output)) as robot:
        episodes = robot.episodes()
        steps = list(robot.steps(episodes))
    assert episodes[0].meta["action_names"] == [*JOINTS, "gripper"]
    for (_, obs, action), (_, after, _) in zip(steps[:-1], steps[1:]):
        # The target of a step: the last trajectory stamped before the next step (the fixture
        # sends one every 0.1 s from START, each for 0.1 s later).
        sent = np.floor((after.stamp - START) / 0.1 - 1e-9) * 0.1
        np.testing.assert_allclose(action[:7], joint_targets(sent + 0.1), atol=1e-6)


def test_episode_boundaries_from_a_topic(tmp_path):
    bag = write_robot_bag(tmp_path / "bag", episode_marks=(0.95,))
    episodes, steps, _ = read_steps(bag, episode_topic="/episode_start")
    assert [len(episode.plan) for episode in episodes] == [10, 10]
    assert [number for number, _, _ in steps] == [0] * 10 + [1] * 10
    assert all(step.stamp < START + 0.95 for step in episodes[0].plan)


def test_transform_tree_composes_chains_and_interpolates():
    tree = TransformTree()
    a, b = np.eye(4), np.eye(4)
    a[:3, 3] = (1.0, 0.0, 0.0)
    b[:3, 3] = (3.0, 0.0, 0.0)
    tree.add("/base", "arm", np.eye(4), None)
    tree.add("arm", "/tool", a, 10.0)
    tree.add("arm", "tool", b, 11.0)
    np.testing.assert_allclose(tree.lookup("base", "tool", 10.5)[:3, 3], (2.0, 0.0, 0.0))
    np.testing.assert_allclose(tree.lookup("tool", "/base", 11.0)[:3, 3], (-3.0, 0.0, 0.0))
    with pytest.raises(LookupError, match="ends at 11.000 s"):
        tree.lookup("base", "tool", 11.5)
    with pytest.raises(LookupError, match="no TF for frame 'camera'"):
        tree.lookup("base", "camera", 10.0)


def test_converted_episodes_train(robot_bag, tmp_path):
    from train_fixtures import train_tiny_stage1

    import_bags([robot_bag], tmp_path / "episodes", robot_config(), report=lambda line: None)
    reader = EpisodeReader(list_episodes(tmp_path / "episodes")[0])
    assert reader.meta["action_names"] == ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
    assert len(reader) == 20 and reader.meta["step_period"] == pytest.approx(0.1)
    _, results = train_tiny_stage1(tmp_path / "episodes", tmp_path / "run", steps=5)
    assert results[-1].steps == 5 and results[-1].final_checkpoint.is_dir()
    assert results[-1].last_metrics and all(np.isfinite(v) for v in results[-1].last_metrics.values())


# ---- the command line, and bad input ----------------------------------------------------------------

def write_config(tmp_path: Path, **changes) -> Path:
    import copy

    data = copy.deepcopy(CONFIG)
    for dotted, value in changes.items():
        target = data
        *parents, last = dotted.split(".")
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[last] = value
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_convert_command_on_robot_bags_mcap_and_sqlite3(tmp_path, robot_bag, capsys):
    from vla3d_ros.cli import main

    sqlite_bag = write_robot_bag(tmp_path / "sqlite_bag", storage="sqlite3", duration=1.0)
    config = write_config(tmp_path)
    assert main(["convert", str(robot_bag), str(sqlite_bag), str(tmp_path / "out"), "--config", str(config),
                 "--instruction", "stack it"]) == 0
    episodes = [EpisodeReader(path) for path in list_episodes(tmp_path / "out")]
    assert [len(e) for e in episodes] == [20, 10]
    assert {e.meta["instruction"] for e in episodes} == {"stack it"}
    assert capsys.readouterr().out.count("used as published") == 2     # said once per camera
    assert main(["convert", str(sqlite_bag), str(tmp_path / "slow"), "--config", str(config),
                 "--step-period", "0.2"]) == 0
    slow = EpisodeReader(list_episodes(tmp_path / "slow")[0])
    assert slow.meta["step_period"] == 0.2 and len(slow) >= 5
    np.testing.assert_allclose(np.diff(np.load(list_episodes(tmp_path / "slow")[0] / "stamp.npy")), 0.2, atol=1e-9)


@pytest.mark.parametrize("case", ["topic absent", "no tf", "unsupported encoding", "truncated bag", "no config"])
def test_bad_bags_are_refused_in_one_line_naming_bag_topic_and_field(tmp_path, capsys, case):
    from vla3d_ros.cli import main

    bag, changes = tmp_path / "bag", {}
    if case == "topic absent":
        write_robot_bag(bag, duration=0.5, drop_topics=("/wrist/depth/image_rect_raw",))
        expected = ["/wrist/depth/image_rect_raw", "cameras[1].topics.depth", "not in the bag"]
    elif case == "no tf":
        write_robot_bag(bag, duration=0.5, with_tf=False)
        expected = ["topic /tf", "ee_frame 'ee_link'"]
    elif case == "unsupported encoding":
        write_robot_bag(bag, duration=0.5, front_encoding="yuv422")
        expected = ["topic /front/color/image_raw", "field encoding", "'yuv422'"]
    elif case == "truncated bag":
        write_robot_bag(bag, duration=0.5)
        mcap = bag / "bag.mcap"
        mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
        expected = ["truncated or corrupt"]     # rosbags fails on open or while reading: both say so
    else:
        write_robot_bag(bag, duration=0.5)
        expected = ["not written by vla3d convert", "--config"]
    args = ["convert", str(bag), str(tmp_path / "out")]
    if case != "no config":
        args += ["--config", str(write_config(tmp_path, **changes))]
    code = main(args)
    error = capsys.readouterr().err
    assert code in (1, 2) and error.startswith("vla3d convert: error: ") and error.count("\n") == 1, error
    assert str(bag) in error and "Traceback" not in error
    for text in expected:
        assert text in error, (text, error)
    assert not (tmp_path / "out").exists() or not list_episodes(tmp_path / "out")


# ---- fuzzing the importer ---------------------------------------------------------------------------

def _mutations():
    """(topic, field, value strategy) of what real bags get wrong."""
    from hypothesis import strategies as st

    numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.integers(-5, 5).map(float))
    return st.one_of(
        st.tuples(st.just("/front/color/image_raw"), st.sampled_from(["encoding"]),
                  st.sampled_from(["rgb8", "mono8", "16UC1", "yuv422", "", "bgra8"])),
        st.tuples(st.just("/front/color/image_raw"), st.sampled_from(["step", "height", "width"]), st.integers(-2, 200)),
        st.tuples(st.just("/front/color/image_raw"), st.just("data"), st.integers(0, 100)),        # truncated to n bytes
        st.tuples(st.just("/wrist/color/image_raw/compressed"), st.just("format"),
                  st.sampled_from(["png", "jpeg", "16UC1; compressedDepth", "", "theora"])),
        st.tuples(st.just("/wrist/color/image_raw/compressed"), st.just("data"), st.integers(0, 300)),
        st.tuples(st.just("/front/aligned_depth_to_color/image_raw"), st.sampled_from(["encoding"]),
                  st.sampled_from(["32FC1", "8UC1", "16SC1"])),
        st.tuples(st.just("/front/aligned_depth_to_color/image_raw"), st.just("is_bigendian"), st.just(1)),
        st.tuples(st.just("/wrist/color/camera_info"), st.just("k"), st.lists(numbers, min_size=9, max_size=9)),
        st.tuples(st.just("/wrist/color/camera_info"), st.sampled_from(["width", "height"]), st.integers(0, 64)),
        st.tuples(st.just("/tf"), st.just("rotation"), st.lists(numbers, min_size=4, max_size=4)),
        st.tuples(st.just("/tf"), st.just("child_frame_id"), st.sampled_from(["", "/", "ee_link ", "/ee_link"])),
        st.tuples(st.just("/joint_states"), st.just("name"), st.integers(0, 9)),                  # keep n names
        st.tuples(st.just("/joint_states"), st.just("position"), st.lists(numbers, min_size=8, max_size=8)),
        st.tuples(st.just("/servo_node/delta_twist_cmds"), st.just("linear"), st.lists(numbers, min_size=3, max_size=3)),
    )


def _apply(msg, field, value) -> None:
    if field == "data":
        msg.data = msg.data[:value]
    elif field == "rotation":
        for transform in msg.transforms:
            rotation = transform.transform.rotation
            rotation.x, rotation.y, rotation.z, rotation.w = value
    elif field == "child_frame_id":
        for transform in msg.transforms:
            transform.child_frame_id = value
    elif field == "name":
        msg.name = msg.name[:value]
    elif field in ("k", "position"):
        setattr(msg, field, np.array(value, np.float64))
    elif field == "linear":
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = value
    else:
        setattr(msg, field, value)


def test_importer_fuzz_refuses_in_one_line_or_converts(tmp_path_factory):
    """Generated faults in the messages of a robot's bag: every outcome is episodes or a one-line
    BagImportError naming the bag; never another exception, never NaN in what was written."""
    import tempfile

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from vla3d_ros.data.bag_import import BagImportError

    outcomes = {"converted": 0, "refused": 0}
    root = tmp_path_factory.mktemp("fuzz")

    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_mutations(), min_size=1, max_size=2), st.integers(1, 4))
    def case(mutations, every):
        with tempfile.TemporaryDirectory(dir=root) as directory:
            directory = Path(directory)

            def mutate(index, topic, msg):
                for target, field, value in mutations:
                    if topic == target and index % every == 0:
                        _apply(msg, field, value)

            try:
                bag = write_robot_bag(directory / "bag", duration=0.3, mutate=mutate)
            except Exception:   # noqa: BLE001 - rosbags cannot even serialise this mutation
                return
            try:
                written = import_bags([bag], directory / "out", robot_config(), report=lambda line: None)
            except BagImportError as error:
                assert str(bag) in str(error) and "\n" not in str(error), str(error)
                outcomes["refused"] += 1
                return
            outcomes["converted"] += 1
            for episode in written:
                reader = EpisodeReader(episode)
                for name in ("intrinsics", "T_base_cam", "joint_positions", "ee_pose", "actions"):
                    values = np.load(episode / f"{name}.npy")
                    assert np.all(np.isfinite(values)), (name, mutations)
                assert len(reader) > 0

    case()
    assert outcomes["converted"] > 0 and outcomes["refused"] > 0, outcomes
