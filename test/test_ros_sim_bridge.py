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
