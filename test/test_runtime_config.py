"""Runtime config schema: shipped files load, errors quote the key and the value."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from vla3d_ros.runtime.config import ConfigError, RuntimeConfig, load_runtime_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
SIM = CONFIG_DIR / "robot_sim.yaml"
PANDA = CONFIG_DIR / "robot_example_panda.yaml"


@pytest.mark.parametrize("path", [SIM, PANDA])
def test_shipped_configs_load_and_round_trip(path):
    config = load_runtime_config(path)
    assert len(config.cameras) == 3
    assert RuntimeConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config


def test_sim_config_matches_the_simulator_cameras():
    config = load_runtime_config(SIM)
    assert config.camera_names == ("front", "side", "wrist")
    assert all(camera.has_depth and camera.depth_encoding == "32FC1" for camera in config.cameras)


def test_panda_example_is_safe_by_default():
    config = load_runtime_config(PANDA)
    assert config.safety.start_in_dry_run
    assert config.watchdog.command_timeout == 0.1
    front = config.camera("front").extrinsics.matrix()
    # The front camera looks back at the robot (optical z along -x) and down.
    optical_axis = front[:3, 2]
    assert optical_axis[0] < -0.8 and optical_axis[2] < 0
    np.testing.assert_allclose(front[:3, :3] @ front[:3, :3].T, np.eye(3), atol=1e-6)


def base() -> dict:
    return yaml.safe_load(SIM.read_text())


def mutate(path: str, value, delete: bool = False) -> dict:
    data = copy.deepcopy(base())
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if delete:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("safety.max_linar_speed", 0.3, "safety.max_linar_speed: unknown key (value 0.3)"),
        ("cameras.0.topic", "/x", "cameras[0].topic: unknown key (value '/x')"),
        ("safety.max_linear_speed", "fast", "safety.max_linear_speed: expected a finite number, got 'fast'"),
        ("safety.max_linear_speed", -1.0, "safety.max_linear_speed: expected a number > 0, got -1.0"),
        ("sync.queue_size", 2.5, "sync.queue_size: expected an integer, got 2.5"),
        ("sync.queue_size", True, "sync.queue_size: expected an integer, got True"),
        ("safety.start_in_dry_run", "yes", "safety.start_in_dry_run: expected true or false, got 'yes'"),
        ("output.adapter", "moveit", "output.adapter: expected one of ['servo', 'ros2_control'], got 'moveit'"),
        ("cameras.1.depth_encoding", "16UC3", "cameras[1].depth_encoding: expected one of ['16UC1', '32FC1']"),
        ("safety.workspace.min", [0.2, 0.0], "safety.workspace.min: expected a list of 3 values, got [0.2, 0.0]"),
        ("safety.workspace.min", [2.0, -0.5, 0.0], "safety.workspace.min: expected min < max per axis"),
        ("rates.control_hz", 0, "rates.control_hz: expected a rate in (0, 1000] Hz, got 0.0"),
        ("cameras", [], "cameras: expected at least one camera, got []"),
        ("cameras.0.extrinsics", {"xyz": [0, 0, 0], "quat_xyzw": [0, 0, 0, 2]},
         "cameras[0].extrinsics.quat_xyzw: expected a unit quaternion"),
        ("cameras.2.name", "front", "cameras: expected unique camera names, got ['front', 'side', 'front']"),
        ("output.adapter", "ros2_control", "output.ros2_control.joint_names: expected the controller's joint names"),
        ("executor.max_chunk_age", 0.5, "watchdog.observation_timeout: expected <= executor.max_chunk_age (0.5)"),
        ("torch_threads", 0, "torch_threads: expected an integer in [1, 256], got 0"),
        ("watchdog.camera_startup_grace", -0.5, "watchdog.camera_startup_grace: expected a number >= 0, got -0.5"),
    ],
)
def test_config_errors_quote_key_and_value(path, value, message):
    with pytest.raises(ConfigError) as error:
        RuntimeConfig.from_dict(mutate(path, value))
    assert message in str(error.value)


def test_missing_required_key_and_depth_without_encoding():
    with pytest.raises(ConfigError, match="base_frame: required key is missing"):
        RuntimeConfig.from_dict(mutate("base_frame", None, delete=True))
    with pytest.raises(ConfigError, match=r"cameras\[0\].depth_encoding: expected one of .* when a depth topic is set"):
        RuntimeConfig.from_dict(mutate("cameras.0.depth_encoding", None, delete=True))


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "robot.yaml"
    bad.write_text("base_frame: [unclosed\n")
    with pytest.raises(ConfigError, match="robot.yaml: cannot read YAML"):
        load_runtime_config(bad)
    bad.write_text(yaml.safe_dump(mutate("sync.slop", "tight")))
    with pytest.raises(ConfigError, match=r"robot.yaml: sync.slop: expected a finite number, got 'tight'"):
        load_runtime_config(bad)
    with pytest.raises(ConfigError, match="<root>: expected a mapping"):
        RuntimeConfig.from_dict(["not", "a", "mapping"])
