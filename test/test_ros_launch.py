"""Launch files (parsed: `launch` is not installable here), the RViz layout, and `vla3d bringup`
as a user runs it: starts the graph, then exits cleanly on Ctrl-C."""
from __future__ import annotations

import ast
import importlib.util
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ros_graph_fixtures import runtime_config
from vla3d_ros.ros import topics
from vla3d_ros.ros.graph import ROLES, process_groups

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_three_launch_files_exist():
    assert {p.name for p in LAUNCH_FILES} == {"bringup.launch.py", "replay.launch.py", "sim.launch.py"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_launch_argument_has_a_description(path):
    calls = [node for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument"]
    assert calls, f"{path.name} declares no launch argument"
    for call in calls:
        description = {kw.arg: kw.value for kw in call.keywords}.get("description")
        name = ast.literal_eval(call.args[0])
        assert description is not None, f"{path.name}: argument {name!r} has no description"
        text = ast.literal_eval(description) if isinstance(description, ast.Constant) else \
            "".join(ast.literal_eval(part) for part in ast.walk(description) if isinstance(part, ast.Constant))
        assert len(text) > 15, f"{path.name}: argument {name!r} has a too short description {text!r}"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files_import_without_launch_and_run_vla3d(path):
    module = load(path)
    first = module.commands(*(["/tmp/bag"] if path.name == "replay.launch.py" else
                              ["pick_place_bowl"] if path.name == "sim.launch.py" else ["robot.yaml"]))[0]
    assert first[0] == "vla3d" and first[1] in ("bringup", "replay")
    with pytest.raises(RuntimeError, match="launch"):
        module.generate_launch_description()


def test_bringup_launch_covers_every_role_once():
    commands = load(ROOT / "launch" / "bringup.launch.py").commands("robot.yaml", "ckpt")
    roles = [role for command in commands for role in command[command.index("--roles") + 1].split(",")]
    assert sorted(roles) == sorted(ROLES)
    assert len(commands) == len(process_groups())
    assert all(command[command.index("--checkpoint") + 1] == "ckpt" for command in commands)


def test_rviz_layout_shows_markers_points_images_and_tf():
    layout = yaml.safe_load((ROOT / "config" / "vla3d.rviz").read_text())
    displays = layout["Visualization Manager"]["Displays"]
    by_class = {d["Class"].split("/")[-1]: d for d in displays}
    assert {"MarkerArray", "PointCloud2", "Image", "TF"} <= set(by_class)
    assert by_class["MarkerArray"]["Topic"]["Value"] == topics.MARKERS
    assert by_class["PointCloud2"]["Topic"]["Value"] == topics.COMPLETED_POINTS
    assert by_class["PointCloud2"]["Channel Name"] == "instance"


def first_line(stream, timeout: float) -> str:
    """The first line of `stream`, or "" if none within `timeout` seconds (or the process died)."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


def test_bringup_runs_until_ctrl_c_and_exits_cleanly(tmp_path):
    config = tmp_path / "robot.yaml"
    config.write_text(yaml.safe_dump(runtime_config().to_dict()))
    process = subprocess.Popen(
        # -X faulthandler: on a hang the SIGABRT below makes the child print every thread's stack.
        [sys.executable, "-X", "faulthandler", "-m", "vla3d_ros.cli", "bringup", "--config", str(config),
         "--roles", "action,markers"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        # Start-up (python, imports, rclpy) takes seconds, much longer on a loaded machine: wait for
        # the readiness line, with a bound that only a broken start-up reaches.
        line = first_line(process.stdout, timeout=120)
        if "action, markers running" not in line:
            process.kill()
            pytest.fail(f"no readiness line (got {line!r}); stderr:\n{process.communicate()[1]}")
        process.send_signal(signal.SIGINT)
        # Exiting takes about a second; the bound only catches a hang. communicate() keeps reading
        # both pipes, so a chatty child can never block on a full pipe while we wait for it.
        try:
            _, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            _, stderr = process.communicate(timeout=30)
            pytest.fail(f"bringup did not exit within 60 s of Ctrl-C; its threads:\n{stderr[-6000:]}")
        assert process.returncode == 0, stderr[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_bringup_reports_a_bad_config_in_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(dict(runtime_config().to_dict(), bogus=1)))
    result = subprocess.run([sys.executable, "-m", "vla3d_ros.cli", "bringup", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "bogus: unknown key" in result.stderr


def test_replay_launch_plays_the_configs_topics_on_clock_and_records_the_outputs():
    graph, record, play = load(ROOT / "launch" / "replay.launch.py").commands("/data/robot_bag", str(
        ROOT / "config" / "robot_sim.yaml"), "ckpt")
    assert graph[:2] == ["vla3d", "bringup"] and "--use-sim-time" in graph and graph[-1] == "ckpt"
    assert play[:4] == ["ros2", "bag", "play", "/data/robot_bag"] and "--clock" in play
    assert {"/sim/front/color/image_raw", "/sim/wrist/depth/image_raw", "/sim/joint_states", "/tf",
            "/tf_static"} <= set(play)
    assert record[:3] == ["ros2", "bag", "record"] and "/data/robot_bag_replay" in record
    assert {"/vla3d/action_chunk", "/vla3d/markers", "/sim/servo/delta_twist_cmds", "/diagnostics"} <= set(record)
