"""The sim bridge closes the loop in lockstep: MuJoCo env -> topics -> graph (tiny policy) ->
safe twist -> env step; and the twist <-> EE-delta conversions are exact inverses."""
from __future__ import annotations

import numpy as np
import pytest

from ros_graph_fixtures import fast_policy_loader, runtime_config, save_tiny_checkpoint
from vla3d_ros.ros.graph import build_graph
from vla3d_ros.ros.sim_bridge_node import run_sim_episodes, twist_to_ee_delta
from vla3d_ros.runtime.safety import SafetyFilter, SafetyLimits


@pytest.mark.parametrize("seed", range(5))
def test_twist_to_ee_delta_inverts_the_safety_filter(seed):
    rng = np.random.default_rng(seed)
    delta = np.concatenate([rng.uniform(-0.01, 0.01, 3), rng.uniform(-0.05, 0.05, 3)])
    limits = SafetyLimits(max_linear_speed=10.0, max_angular_speed=10.0)
    twist, reasons = SafetyFilter(limits).filter_ee_delta(delta, np.array([0.5, 0.0, 0.4]), 0.1, "world", 0.0)
    assert reasons == []
    back = twist_to_ee_delta(twist.linear, twist.angular, 0.1, gripper=0.7)
    np.testing.assert_allclose(back[:6], delta, atol=1e-12)
    assert back[6] == 0.7


def test_closed_loop_episode_in_lockstep(ros_context, tmp_path):
    from vla3d_ros.sim.env import TabletopEnv

    cameras = ("front", "wrist")
    config = runtime_config(cameras=cameras, base_frame="world", ee_frame="ee_site",
                            safety={"start_in_dry_run": False,
                                    "workspace": {"min": [0.0, -0.6, 0.0], "max": [1.0, 0.6, 0.9]}})
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny", num_views=len(cameras), num_joints=9)  # 7 arm + 2 fingers
    env = TabletopEnv("pick_place_bowl", image_size=(32, 32), cameras=cameras)
    graph = build_graph(config, context=ros_context, use_sim_time=True, trigger="observation",
                        checkpoint=str(checkpoint), policy_loader=fast_policy_loader())
    try:
        start = env.reset(seed=3).ee_pose[:3].copy()
        result = run_sim_episodes(graph, env, episodes=1, max_steps=4, seed=3, timeout=20.0,
                                  record_to=tmp_path / "run")
    finally:
        graph.destroy()
        env.close()
    assert result.steps == 4 and result.timeouts == 0
    assert result.chunks == 2                     # inference at 5 Hz, sim at 10 Hz: steps 0 and 2
    assert len(result.outcomes) == 1 and result.outcomes[0].steps == 4
    # Armed, the policy's (random, tiny) chunks moved the arm.
    assert np.linalg.norm(result.frames[0].ee_pose[:3] - start) > 1e-4
    assert result.recorded["/vla3d/markers"] >= 2


class InstructionHashEncoder:
    """Distinct instructions -> distinct unit embeddings, so an instruction that arrives late
    changes the chunk (the fixtures' constant encoder would hide it)."""

    def embed(self, instruction: str) -> np.ndarray:
        import zlib

        vector = np.random.default_rng(zlib.crc32(instruction.encode())).normal(size=384)
        return (vector / np.linalg.norm(vector)).astype(np.float32)


def test_ros_graph_acts_like_the_direct_rollout(ros_context, tmp_path):
    """Same tiny policy, same seeds: the lockstep ROS graph and `evaluate.rollout.run_evaluation_episode`
    (no ROS) must send the env the same actions. Guards the lockstep ordering: the first chunk
    of an episode once saw the previous episode's instruction, the joint state and gripper
    opening were a step old, and the gripper command reached the sim a step late."""
    import dataclasses

    from vla3d_ros.evaluate.rollout import RolloutSettings, run_evaluation_episode
    from vla3d_ros.model.precision import resolve_precision
    from vla3d_ros.ros.inference_node import load_checkpoint_policy
    from vla3d_ros.sim.env import TabletopEnv

    class RecordingEnv(TabletopEnv):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.executed: list[np.ndarray] = []

        def step(self, action):
            self.executed.append(np.array(action, np.float64))
            return super().step(action)

    cameras, seeds, steps = ("front", "wrist"), (3, 4), 4
    config = runtime_config(cameras=cameras, base_frame="world", ee_frame="ee_site",
                            safety={"start_in_dry_run": False, "max_linear_speed": 100.0, "max_angular_speed": 100.0,
                                    "workspace": {"min": [-5.0, -5.0, -5.0], "max": [5.0, 5.0, 5.0]}})
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny", num_views=len(cameras), num_joints=9)
    seen = []     # (instruction, joint positions, gripper) of every inference on the sim's cameras

    def recording_loader(path: str, device: str, precision: str):
        loaded = load_checkpoint_policy(path, device, precision, instruction_encoder=InstructionHashEncoder())

        class Recording:
            def infer(self, obs):
                if obs.camera_names == cameras:    # not configure's warm-up on a synthetic input
                    seen.append((obs.instruction, obs.joint_positions.copy(), obs.gripper))
                return loaded.policy.infer(obs)
        return dataclasses.replace(loaded, policy=Recording())

    env = RecordingEnv("push_to_zone", image_size=(32, 32), cameras=cameras)
    graph = build_graph(config, context=ros_context, use_sim_time=True, trigger="observation",
                        checkpoint=str(checkpoint), policy_loader=recording_loader)
    try:
        result = run_sim_episodes(graph, env, episodes=len(seeds), max_steps=steps, seed=seeds[0], timeout=20.0)
    finally:
        graph.destroy()
        env.close()
    assert result.timeouts == 0 and [o.steps for o in result.outcomes] == [steps] * len(seeds)

    direct_env = RecordingEnv("push_to_zone", image_size=(32, 32), cameras=cameras)
    precision = resolve_precision(config.precision, "cpu")     # the node's: same forward on both paths
    runner = load_checkpoint_policy(str(checkpoint), "cpu", precision, instruction_encoder=InstructionHashEncoder()).policy
    direct_inputs, instructions = [], []
    try:
        for index, seed in enumerate(seeds):
            first = direct_env.reset(seed=seed)
            instructions.append(first.instruction)
            direct_inputs.append((first.joint_positions.copy(), first.gripper))
            run_evaluation_episode(runner, direct_env, task="push_to_zone", cell=(), index=index, seed=seed,
                                   settings=RolloutSettings(max_steps=steps, image_size=(32, 32), cameras=cameras),
                                   step_period=0.1)
    finally:
        direct_env.close()
    assert instructions[0] != instructions[1]

    chunks_per_episode = steps // 2              # inference at 5 Hz, sim at 10 Hz
    assert [instruction for instruction, _, _ in seen] == \
        [text for text in instructions for _ in range(chunks_per_episode)]
    for episode, (joints, gripper) in enumerate(direct_inputs):   # each episode's first observation
        _, ros_joints, ros_gripper = seen[episode * chunks_per_episode]
        np.testing.assert_allclose(ros_joints, joints, atol=1e-6)
        assert ros_gripper == pytest.approx(gripper, abs=1e-6)
    ros, direct = np.stack(env.executed), np.stack(direct_env.executed)
    assert ros.shape == direct.shape == (len(seeds) * steps, 7)
    np.testing.assert_allclose(ros[:, :6], direct[:, :6], atol=1e-5)
    np.testing.assert_allclose(ros[:, 6], np.clip(direct[:, 6], 0.0, 1.0), atol=1e-5)  # the filter clips the gripper
