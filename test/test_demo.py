"""`vla3d demo` end to end (sim bridge + full graph + a tiny checkpoint saved here), its defaults
from the checkpoint's metadata, and its one-line refusals."""
from __future__ import annotations

import argparse
import dataclasses
import re

import numpy as np
import pytest
from PIL import Image

import yaml

from vla3d_ros.cli import main
from vla3d_ros.data.episodes import EpisodeReader, list_episodes
from vla3d_ros.apps import demo

CAMERAS = ("front", "wrist")
NUM_JOINTS = 9          # the simulated Panda: 7 arm joints + 2 fingers


def save_tiny(directory, *, extra=None):
    import torch

    from vla3d_ros.model.checkpoint import save_checkpoint
    from vla3d_ros.model.config import preset
    from vla3d_ros.model.policy import VLA3DPolicy

    torch.manual_seed(0)
    config = dataclasses.replace(preset("tiny"), num_views=len(CAMERAS), state_dim=NUM_JOINTS + 8)
    return save_checkpoint(directory, VLA3DPolicy(config), step_period=0.1, extra=extra)


def demo_args(**overrides) -> argparse.Namespace:
    from vla3d_ros.commands.demo import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_demo_runs_the_graph_and_writes_the_overlay_and_the_bag(tmp_path, monkeypatch, capsys):
    from rosbags.rosbag2 import Reader

    from ros_graph_fixtures import fast_policy_loader

    checkpoint = save_tiny(tmp_path / "tiny", extra={"camera_names": list(CAMERAS), "tasks": ["push_to_zone"]})
    # The sentence encoder takes seconds to load; this test is about the plumbing.
    monkeypatch.setattr("vla3d_ros.ros.graph.load_checkpoint_policy", fast_policy_loader())
    out = tmp_path / "out"
    (out / demo.BAG_NAME).parent.mkdir()
    (out / demo.BAG_NAME).write_text("a previous run's bag")       # replaced, not an error

    code = main(["demo", "--checkpoint", str(checkpoint), "--episodes", "1", "--max-steps", "4",
                 "--out", str(out), "--seed", "3"])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert any(re.fullmatch(r"success: [01]/1 episodes \(push_to_zone\)", line) for line in lines), captured.out
    assert any(re.fullmatch(r"episode 1 \(seed 3\): (SUCCESS|failure) after \d+ steps, .+", line) for line in lines)
    assert any(line.startswith("policy latency: p50 ") for line in lines)
    # 4 steps at 10 Hz, inference at 5 Hz: chunks at steps 0 and 2 -> two rows; 32 px views upscaled x8
    with Image.open(out / demo.OVERLAY_NAME) as png:
        assert png.size == (len(CAMERAS) * 256, 2 * (256 + 2 * 14))
    with Reader(out / demo.BAG_NAME) as reader:
        counts = {connection.topic: connection.msgcount for connection in reader.connections}
    assert counts["/sim/front/color/image_raw"] == counts["/sim/wrist/depth/image_raw"] == 4
    assert counts["/vla3d/action_chunk"] == counts["/vla3d/instances"] == 2
    assert counts["/sim/servo/delta_twist_cmds"] >= 4          # one command per control tick
    assert counts["/tf_static"] == 1 and counts["/tf"] >= 2 * 4  # front fixed; wrist + end effector per step
    assert not (out / ".demo_run_bag").exists()

    # The demo's bag is a robot's bag: it converts into episodes and replays through the graph.
    config = tmp_path / "robot_sim_front_wrist.yaml"
    sim = yaml.safe_load(demo.DEFAULT_CONFIG.read_text())
    sim["cameras"] = [camera for camera in sim["cameras"] if camera["name"] in CAMERAS]
    config.write_text(yaml.safe_dump(sim))
    assert main(["convert", str(out / demo.BAG_NAME), str(tmp_path / "episodes"), "--config", str(config)]) == 0
    episode = EpisodeReader(list_episodes(tmp_path / "episodes")[0])
    assert len(episode) == 4 and episode.meta["camera_names"] == list(CAMERAS)
    assert main(["replay", str(out / demo.BAG_NAME), "--config", str(config), "--checkpoint", str(checkpoint),
                 "--output", str(tmp_path / "replayed"), "--timeout", "20"]) == 0
    report = capsys.readouterr().out
    assert "real-time factor" in report and "open-loop L1 vs /sim/servo/delta_twist_cmds" in report


def test_missing_shipped_checkpoint_fails_in_one_line_saying_how_to_train(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "DEFAULT_CHECKPOINT", tmp_path / "assets" / "default")
    assert main(["demo", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "shipped checkpoint" in err and str(tmp_path / "assets" / "default") in err and "vla3d train" in err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_that_does_not_load_fails_the_run_in_one_line(tmp_path, capsys):
    checkpoint = save_tiny(tmp_path / "ck", extra={"camera_names": list(CAMERAS)})
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])             # truncated after saving
    assert main(["demo", "--checkpoint", str(checkpoint), "--max-steps", "2", "--out", str(tmp_path / "out")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vla3d demo: error:")]
    assert len(errors) == 1 and "failed to configure" in errors[0] and "truncated" in errors[0], errors
    assert not (tmp_path / "out" / demo.OVERLAY_NAME).exists()


def test_defaults_come_from_the_checkpoint(tmp_path):
    checkpoint = save_tiny(tmp_path / "ck", extra={"camera_names": ["wrist", "front"], "tasks": ["stack_cubes"]})
    plan = demo.plan_demo(demo_args(checkpoint=checkpoint))
    assert (plan.task, plan.cameras, plan.image_size, plan.max_steps) == ("stack_cubes", ("wrist", "front"), (32, 32), 80)
    plan = demo.plan_demo(demo_args(checkpoint=checkpoint, task="push_to_zone", image_size=16, max_steps=5))
    assert (plan.task, plan.image_size, plan.max_steps) == ("push_to_zone", (16, 16), 5)
    # without metadata: the default task and the first num_views of front, side, wrist
    plan = demo.plan_demo(demo_args(checkpoint=save_tiny(tmp_path / "bare")))
    assert (plan.task, plan.cameras) == (demo.DEFAULT_TASK, ("front", "side"))
    config = demo.sim_runtime_config(demo.DEFAULT_CONFIG, ("wrist", "front"))
    assert config.camera_names == ("wrist", "front") and not config.safety.start_in_dry_run


@pytest.mark.parametrize("overrides, message", [
    ({"task": "juggle"}, "unknown task 'juggle'"),
    ({"episodes": 0}, "--episodes must be >= 1, got 0"),
    ({"max_steps": 0}, "--max-steps must be >= 1, got 0"),
    ({"image_size": 4}, "--image-size must be >= 8 pixels, got 4"),
    ({"threads": 0}, "--threads must be >= 1, got 0"),
])
def test_bad_arguments_are_refused_with_the_bad_value(tmp_path, overrides, message):
    checkpoint = save_tiny(tmp_path / "ck")
    with pytest.raises(demo.DemoError, match=re.escape(message)):
        demo.plan_demo(demo_args(checkpoint=checkpoint, **overrides))


def test_cameras_missing_from_the_config_are_refused():
    with pytest.raises(demo.DemoError, match=r"\['top'\] are not in"):
        demo.sim_runtime_config(demo.DEFAULT_CONFIG, ("front", "top"))


def test_the_run_is_isolated_on_a_private_domain_unless_one_is_chosen(monkeypatch):
    monkeypatch.delenv("ROS_DOMAIN_ID", raising=False)
    assert 101 <= demo.demo_domain_id(None) <= 200
    assert demo.demo_domain_id(7) == 7
    monkeypatch.setenv("ROS_DOMAIN_ID", "42")
    assert demo.demo_domain_id(None) is None                   # rclpy reads $ROS_DOMAIN_ID
    with pytest.raises(demo.DemoError, match="got 300"):
        demo.demo_domain_id(300)


def test_outputs_of_a_previous_run_are_replaced_but_directories_never(tmp_path):
    out = tmp_path / "out"
    overlay, bag, scratch = demo.prepare_outputs(out)
    overlay.write_bytes(b"old")
    scratch.mkdir()
    assert demo.prepare_outputs(out) == (overlay, bag, scratch)
    assert not overlay.exists() and not scratch.exists()
    bag.mkdir()
    with pytest.raises(demo.DemoError, match="is a directory"):
        demo.prepare_outputs(out)
    assert bag.is_dir()


def test_collector_pairs_chunks_with_their_sets_in_bounded_memory(ros_context):
    from types import SimpleNamespace

    from ros_graph_fixtures import observation
    from vla3d_ros.ros import conversions as conv
    from vla3d_ros.types import EE_DELTA_ACTION_NAMES, ActionChunk

    class FakeSync:
        current = None

        def add_listener(self, listener):
            self.listener = listener

        def remove_listener(self, listener):
            self.listener = None

        def observation(self, instruction):
            return self.current

    sync, rng = FakeSync(), np.random.default_rng(0)
    env = SimpleNamespace(instruction="pick up the red cube", episode_seed=5, num_steps=0)
    graph = type("FakeGraph", (), {"config_context": ros_context, "__getitem__": lambda self, role: sync})()
    collector = demo.make_collector(graph, env, max_kept=8, recent=2)
    try:
        for step in range(100):
            sync.current, env.num_steps = observation(step, rng), step
            sync.listener(sync.current.stamp)
            if step % 2 == 0:                       # inference at half the step rate
                chunk = ActionChunk(np.zeros((3, 7), np.float32), EE_DELTA_ACTION_NAMES, 0.1,
                                    stamp=sync.current.stamp, inference_latency=0.01 * step)
                collector.on_chunk(conv.action_chunk_to_msg(chunk, "world"))
            assert len(collector.records) <= 8 + 2 + 1
        steps = [record.step for record in collector.frames()]
        # every 8th chunk (stride doubled 1 -> 8) and the newest: uniform, first and last included
        assert steps == list(range(0, 97, 16)) + [98]
        assert all(record.episode_seed == 5 and record.chunk.stamp == record.stamp for record in collector.frames())
        assert len(collector.latencies) == 50               # every chunk's latency, not just the kept ones
        frame = collector.overlay_frame(collector.frames()[-1])
        np.testing.assert_allclose(frame.ee_path, np.repeat(collector.frames()[-1].ee_position[None], 4, axis=0))
    finally:
        collector.destroy_node()
    assert sync.listener is None
