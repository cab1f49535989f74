"""`vla3d replay` end to end: a bag (written with the data engineer's writer) played through the
live graph in-process with a tiny checkpoint produces action chunks, instances and markers,
recorded to a new MCAP, and open-loop metrics against the recorded actions."""
from __future__ import annotations

import numpy as np
import pytest

from ros_graph_fixtures import MemoryEpisode, fast_policy_loader, runtime_config, save_tiny_checkpoint
from vla3d_ros.data.bags import write_bag
from vla3d_ros.ros import topics
from vla3d_ros.apps.replay import replay_bag
from vla3d_ros.ros.recorder import output_typestore

NUM_STEPS = 6


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    return write_bag(MemoryEpisode(NUM_STEPS), tmp_path_factory.mktemp("bag") / "episode")


def test_replay_produces_chunks_instances_and_markers(ros_context, bag, tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny")
    output = tmp_path / "outputs"
    report = replay_bag(bag, runtime_config(), output, checkpoint=str(checkpoint),
                        policy_loader=fast_policy_loader(), context=ros_context, timeout=20.0)
    # 10 Hz bag, inference at 5 Hz in bag time: steps 0, 2, 4 -> 3 chunks, all matched, none late.
    assert report.steps == NUM_STEPS and report.timeouts == 0
    assert report.chunks == 3 and report.matched == 3
    assert report.counts[topics.INSTANCES] == 3 and report.counts[topics.COMPLETED_POINTS] == 3
    assert report.counts[topics.MARKERS] >= 3
    # One MarkerArray per policy output the markers node turns into markers: all of them recorded.
    assert report.counts[topics.MARKERS] == report.counts[topics.ACTION_CHUNK] + report.counts[topics.INSTANCES]
    assert set(report.action_l1) == {"dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"}
    assert all(np.isfinite(v) and v >= 0 for v in report.action_l1.values())

    from rosbags.rosbag2 import Reader
    store = output_typestore()
    with Reader(output) as reader:
        by_topic = {}
        for connection, stamp, raw in reader.messages():
            by_topic.setdefault(connection.topic, []).append(store.deserialize_cdr(raw, connection.msgtype))
    chunk_stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in by_topic[topics.ACTION_CHUNK]]
    # Played stamps are the bag's shifted by the player's 1 s offset: steps 0, 2, 4.
    np.testing.assert_allclose(chunk_stamps, [1.0, 1.2, 1.4], atol=1e-6)
    assert all(m.rows == 4 and m.cols == 7 for m in by_topic[topics.ACTION_CHUNK])
    assert any(marker.type == 4 for array in by_topic[topics.MARKERS] for marker in array.markers)  # path


def test_a_robots_bag_replays_with_rates_sets_timing_and_open_loop_error(ros_context, tmp_path):
    """A bag as `ros2 bag record` writes it (robot_bag_fixtures: 30 Hz + 15 Hz cameras, JPEG,
    16UC1, TF chains, servo commands) plays through the graph like a `vla3d convert` bag."""
    from robot_bag_fixtures import robot_config, write_robot_bag

    bag = write_robot_bag(tmp_path / "robot", duration=1.0)
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny", num_views=2, num_joints=7)
    report = replay_bag(bag, robot_config(), tmp_path / "outputs", checkpoint=str(checkpoint),
                        instruction="wipe the table", policy_loader=fast_policy_loader(), context=ros_context,
                        timeout=20.0)
    assert report.steps == 10 and report.timeouts == 0
    assert report.chunks == 5 and report.matched == 5              # inference at 5 Hz over 10 Hz steps
    assert report.summary.camera_rates["front"] == pytest.approx(30.0, rel=0.05)
    assert report.summary.camera_rates["wrist"] == pytest.approx(15.0, rel=0.05)
    assert report.summary.sets >= 14 and report.summary.unmatched["front"] >= 14   # front waits for wrist
    assert report.summary.commands == "/servo_node/delta_twist_cmds"
    assert set(report.action_l1) == {"dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"}
    assert report.latency_ms["p50"] > 0 and report.real_time_factor > 0
    assert report.counts["/diagnostics"] > 0 and report.counts["/vla3d/dry_run/twist"] > 0
    text = report.format()
    assert "real-time factor" in text and "front 30." in text and "open-loop L1 vs /servo_node" in text


def test_replay_refuses_a_bag_without_the_configs_topics_in_one_line(tmp_path, capsys):
    from robot_bag_fixtures import CONFIG, write_robot_bag
    import yaml

    from vla3d_ros.cli import main

    bag = write_robot_bag(tmp_path / "robot", duration=0.5, drop_topics=("/joint_states",))
    config = tmp_path / "robot.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    assert main(["replay", str(bag), "--config", str(config)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("vla3d replay: error: ") and error.count("\n") == 1
    assert str(bag) in error and "/joint_states" in error and "joint_state_topic" in error
