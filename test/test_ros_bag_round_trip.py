"""The round trip that proves the action derivation: a simulated episode played through the live
graph (MuJoCo -> topics -> camera sync -> tiny policy -> safety filter -> servo twist -> MuJoCo),
recorded as a plain bag (the demo's topics + /tf + /tf_static, no vla3d metadata), converted back
with `vla3d convert --config`: the actions the simulator executed come back from the recorded
commands, and K, T_base_cam and the EE pose of every step come back from CameraInfo and TF.
"""
from __future__ import annotations

import numpy as np
import pytest

from ros_graph_fixtures import fast_policy_loader, runtime_config, save_tiny_checkpoint

# Tolerances: commands travel as float64 twists (exact inverse of the safety filter, see
# test_ros_sim_bridge) and K / T as float64 CameraInfo / quaternions; ee_pose is stored float32.
ACTION_TOLERANCE = 1e-6
GEOMETRY_TOLERANCE = 1e-6
STEPS = 8
TRACKING_TOLERANCE = 0.005   # m per 0.1 s step: the arm lags its commanded pose (measured: max 3.4 mm, mean 0.7 mm)


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    """(config, bag path, the observations the sim published, the actions it executed)."""
    import rclpy

    from vla3d_ros.apps.demo import recorded_topics, recording_transforms
    from vla3d_ros.ros.graph import build_graph, spin_until
    from vla3d_ros.ros.recorder import BagRecorder
    from vla3d_ros.ros.sim_bridge_node import run_sim_episodes
    from vla3d_ros.sim.env import TabletopEnv

    class RecordingEnv(TabletopEnv):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.executed, self.observations = [], []

        def reset(self, *args, **kwargs):
            self.observations.append(super().reset(*args, **kwargs))
            return self.observations[-1]

        def step(self, action):
            self.executed.append(np.array(action, np.float64))
            self.observations.append(super().step(action))
            return self.observations[-1]

    tmp_path = tmp_path_factory.mktemp("round_trip")
    cameras = ("front", "wrist")
    config = runtime_config(cameras=cameras, base_frame="world", ee_frame="ee_site",
                            safety={"start_in_dry_run": False, "max_linear_speed": 100.0, "max_angular_speed": 100.0,
                                    "workspace": {"min": [-5.0, -5.0, -5.0], "max": [5.0, 5.0, 5.0]}},
                            convert={"actions": "command", "gripper_target": "command"})
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny", num_views=len(cameras), num_joints=9)
    env = RecordingEnv("push_to_zone", image_size=(32, 32), cameras=cameras)
    context = rclpy.context.Context()
    rclpy.init(context=context)
    graph = None
    try:
        graph = build_graph(config, context=context, use_sim_time=True, trigger="observation",
                            checkpoint=str(checkpoint), policy_loader=fast_policy_loader())
        recorder = graph.add(BagRecorder(tmp_path / "plain", recorded_topics(config), context=context,
                                         record_tf=True))
        result = run_sim_episodes(graph, env, episodes=1, max_steps=STEPS, seed=3, timeout=20.0,
                                  transforms=recording_transforms(graph, recorder, config))
        executor = graph.executor(multithreaded=False)
        assert spin_until(executor, lambda: recorder.stats().received[config.output.servo.topic] >= STEPS, 10.0)
        executor.shutdown()
        recorder.close()
    finally:
        if graph is not None:
            graph.destroy()
        env.close()
        rclpy.shutdown(context=context)
    assert result.timeouts == 0 and len(env.executed) == STEPS
    return config, tmp_path / "plain", env.observations[:STEPS], np.stack(env.executed)


def test_the_bag_is_plain_robot_data(recorded_run):
    from rosbags.rosbag2 import Reader

    _, bag, _, _ = recorded_run
    with Reader(bag) as reader:
        topics = {c.topic: c.msgcount for c in reader.connections}
    assert "/vla3d/episode_meta" not in topics
    assert topics["/tf_static"] == 1                       # the fixed front camera, once
    assert topics["/tf"] >= 2 * STEPS                      # wrist camera + end effector, every step


def test_commands_convert_back_to_the_executed_actions(recorded_run):
    from vla3d_ros.data.bag_import import RobotBag

    config, bag, observations, executed = recorded_run
    with RobotBag(bag, config) as robot:
        episodes = robot.episodes()
        steps = list(robot.steps(episodes))
    assert len(episodes) == 1 and len(steps) == STEPS
    stamps = np.array([obs.stamp for _, obs, _ in steps])
    np.testing.assert_allclose(np.diff(stamps), 0.1, atol=1e-9)
    actions = np.stack([action for _, _, action in steps])
    np.testing.assert_allclose(actions, executed, atol=ACTION_TOLERANCE, rtol=0)
    for (_, converted, _), original in zip(steps, observations):
        np.testing.assert_allclose(converted.intrinsics, original.intrinsics, atol=GEOMETRY_TOLERANCE, rtol=0)
        np.testing.assert_allclose(converted.T_base_cam, original.T_base_cam, atol=GEOMETRY_TOLERANCE, rtol=0)
        np.testing.assert_allclose(converted.ee_pose, original.ee_pose, atol=GEOMETRY_TOLERANCE, rtol=0)
        np.testing.assert_allclose(converted.joint_positions, original.joint_positions, atol=1e-6)
        assert converted.gripper == pytest.approx(original.gripper, abs=1e-6)
        assert converted.instruction == original.instruction
        np.testing.assert_array_equal(np.isnan(converted.depth), ~(original.depth > 0))
        np.testing.assert_allclose(converted.depth, original.depth, atol=1e-7)
        np.testing.assert_array_equal(converted.rgb, original.rgb)


def test_ee_pose_actions_follow_the_executed_ones_up_to_tracking(recorded_run):
    """From EE pose differences the actions are what the arm did, not what it was told: they
    agree with the executed commands up to the controller's tracking error."""
    import dataclasses

    from vla3d_ros.data.bag_import import RobotBag
    from vla3d_ros.sim.controller import MAX_TRANSLATION

    config, bag, _, executed = recorded_run
    config = dataclasses.replace(config, convert=dataclasses.replace(config.convert, actions="ee_pose"))
    with RobotBag(bag, config) as robot:
        actions = np.stack([action for _, _, action in robot.steps(robot.episodes())])
    # The simulator clips each commanded translation to MAX_TRANSLATION per axis, then tracks it.
    commanded = np.clip(executed[:-1, :3], -MAX_TRANSLATION, MAX_TRANSLATION)
    error = np.abs(actions[:-1, :3] - commanded)
    assert error.max() < TRACKING_TOLERANCE, error.max()
    np.testing.assert_allclose(actions[:, 6], executed[:, 6], atol=ACTION_TOLERANCE)
