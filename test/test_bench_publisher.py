"""The DDS bench's publisher process and teardown: the replayed camera set, bounded waits, no node left."""
from __future__ import annotations

import json
import os
import time

import pytest
import rclpy

from vla3d_ros.bench.model_latency import deploy_observation
from vla3d_ros.model.config import preset
from vla3d_ros.apps import bench_graph
from vla3d_ros.ros import topics
from vla3d_ros.ros.graph import build_graph


@pytest.fixture(scope="module")
def small_obs():
    return deploy_observation(preset("tiny"), camera_hw=(24, 32), seed=3)


def test_message_file_replays_the_camera_set(small_obs, tmp_path):
    original = bench_graph.camera_set(small_obs)
    path = bench_graph.write_message_file(small_obs, tmp_path / "set.cdr")
    replayed = bench_graph.read_message_file(path)
    assert [(topic, device) for topic, _, device in replayed] == [(topic, device) for topic, _, device in original]
    for (_, sent, _), (_, back, _) in zip(original, replayed):
        assert type(back) is type(sent) and back == sent      # (CDR padding bytes are not defined)
    # what the graph subscribes to is exactly what is replayed, the arm's messages first
    config = bench_graph.bench_config(small_obs, inference_hz=5.0)
    camera_topics = {topic for camera in config.cameras
                     for topic in (camera.topics.color, camera.topics.depth, camera.topics.camera_info)}
    assert [topic for topic, _, _ in replayed[:2]] == [bench_graph.JOINT_TOPIC, topics.GRIPPER_OPENING]
    assert {topic for topic, _, _ in replayed[2:]} == camera_topics
    devices = [device for _, _, device in replayed]
    assert devices == sorted(devices) and set(devices) == set(range(small_obs.num_views))


def test_message_file_errors_quote_what_is_wrong(small_obs, tmp_path):
    path = bench_graph.write_message_file(small_obs, tmp_path / "set.cdr")
    data = path.read_bytes()
    (tmp_path / "short.cdr").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated"):
        bench_graph.read_message_file(tmp_path / "short.cdr")
    (tmp_path / "long.cdr").write_bytes(data + b"\0")
    with pytest.raises(ValueError, match="bytes left"):
        bench_graph.read_message_file(tmp_path / "long.cdr")
    header, _, payload = data.partition(b"\n")
    index = json.loads(header)
    index[0]["type"] = "sensor_msgs/msg/Imu"
    (tmp_path / "type.cdr").write_bytes(json.dumps(index).encode() + b"\n" + payload)
    with pytest.raises(ValueError, match="sensor_msgs/msg/Imu"):
        bench_graph.read_message_file(tmp_path / "type.cdr")


def test_destroy_graph_leaves_no_node_in_the_dds_graph(small_obs):
    """rclpy's LifecycleNode.destroy_node alone leaves the inference node alive until a GC pass."""
    namespace = f"bench_teardown_{os.getpid()}"      # other processes on this domain cannot match it
    context = rclpy.context.Context()
    rclpy.init(args=["--ros-args", "-r", f"__ns:=/{namespace}"], context=context)
    observer = graph = None
    try:
        observer = rclpy.create_node("observer", context=context)
        config = bench_graph.bench_config(small_obs, inference_hz=5.0)
        graph = build_graph(config, roles=("camera_sync", "inference"), context=context,
                            checkpoint="/nonexistent/never_loaded")

        def graph_nodes():
            return sorted(name for name, ns in observer.get_node_names_and_namespaces()
                          if ns == f"/{namespace}" and name != "observer")

        assert graph_nodes() == ["vla3d_camera_sync", "vla3d_inference"]
        bench_graph.destroy_graph(graph)
        assert graph_nodes() == []
    finally:
        if observer is not None:
            observer.destroy_node()
        rclpy.shutdown(context=context)


def test_publisher_reports_a_phase_that_cannot_match_within_its_bound(small_obs, tmp_path):
    messages = bench_graph.write_message_file(small_obs, tmp_path / "set.cdr")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="DDS matched nothing") as error:
        with bench_graph.PublisherProcess(messages, tmp_path / "stderr.txt") as publisher:
            publisher.run({"rate_hz": 10.0, "num_sets": 1, "match_timeout": 0.5})
    assert bench_graph.JOINT_TOPIC in str(error.value)         # names the unmatched topics
    assert publisher.process.poll() is not None               # the process is gone
    assert time.monotonic() - started < 30.0


def test_publisher_deadline_kills_and_reports(small_obs, tmp_path, monkeypatch):
    messages = bench_graph.write_message_file(small_obs, tmp_path / "set.cdr")
    monkeypatch.setattr(bench_graph, "STARTUP_TIMEOUT", 0.0)    # this side's deadline only
    monkeypatch.setattr(bench_graph, "WATCHDOG_MARGIN", 0.0)
    publisher = bench_graph.PublisherProcess(messages, tmp_path / "stderr.txt")
    with pytest.raises(RuntimeError, match="no reply for startup within 0 s"):
        publisher.run({"rate_hz": 10.0, "num_sets": 1})
    assert publisher.process.poll() is not None


def test_publisher_startup_failure_quotes_its_stderr(tmp_path):
    (tmp_path / "broken.cdr").write_bytes(b'[{"topic": "/x", "type": "std_msgs/msg/Float64", "device": 0, '
                                          b'"bytes": 64}]\n\0\1')
    with pytest.raises(RuntimeError, match="truncated"):
        with bench_graph.PublisherProcess(tmp_path / "broken.cdr", tmp_path / "stderr.txt") as publisher:
            publisher.run({"rate_hz": 10.0, "num_sets": 1})
