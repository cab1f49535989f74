"""`vla3d replay` end to end: a bag (written with the data engineer's writer) played through the
live graph in-process with a tiny checkpoint produces action chunks, instances and markers,
recorded to a new MCAP, and open-loop metrics against the recorded actions."""
from __future__ import annotations

import numpy as np
import pytest

from ros_graph_fixtures import MemoryEpisode, fast_policy_loader, runtime_config, save_tiny_checkpoint
from vla3d_ros.data.bags import write_bag
from vla3d_ros.ros import topics
from vla3d_ros.ros.replay import output_typestore, replay_bag

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
