"""Launch files (`launch` / `launch_ros` are not installable here: parsed, and bringup.launch.py's
description built against recording stand-ins of their classes), the params file against the
parameters the nodes declare, the RViz layout, and `vla3d bringup` as a user runs it: starts the
graph, then exits cleanly on Ctrl-C. The node executables themselves: test_ros_executables.py."""
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


@pytest.mark.parametrize("path", [p for p in LAUNCH_FILES if p.name != "bringup.launch.py"], ids=lambda p: p.name)
def test_application_launch_files_import_without_launch_and_run_vla3d(path):
    module = load(path)
    first = module.commands(*(["/tmp/bag"] if path.name == "replay.launch.py" else ["pick_place_bowl"]))[0]
    assert first[0] == "vla3d" and first[1] in ("bringup", "replay")
    with pytest.raises(RuntimeError, match="launch"):
        module.generate_launch_description()


BRINGUP = ROOT / "launch" / "bringup.launch.py"


def calls(path: Path, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name]


def test_bringup_launch_starts_node_executables_with_launch_ros_actions():
    module = load(BRINGUP)
    with pytest.raises(RuntimeError, match="launch_ros"):
        module.generate_launch_description()
    assert not calls(BRINGUP, "ExecuteProcess")
    started = {ast.literal_eval(kw.value): action for action in ("Node", "LifecycleNode")
               for call in calls(BRINGUP, action) for kw in call.keywords if kw.arg == "executable"}
    assert started == {"inference_node": "LifecycleNode", "action_node": "Node", "markers_node": "Node"}
    assert set(module.NODES) == set(started)
    # Each executable is installed where `ros2 run` / launch_ros look, and exists.
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for executable in started:
        assert os.access(ROOT / "scripts" / executable, os.X_OK) and f"scripts/{executable}" in cmake


def test_bringup_launch_drives_the_lifecycle_by_events():
    """Configure on start, activate once the node reports `inactive` (ros2/demos lifecycle_py)."""
    transitions = {node.attr for node in ast.walk(ast.parse(BRINGUP.read_text()))
                   if isinstance(node, ast.Attribute) and node.attr.startswith("TRANSITION_")}
    assert transitions == {"TRANSITION_CONFIGURE", "TRANSITION_ACTIVATE"}
    handler = calls(BRINGUP, "OnStateTransition")[0]
    keywords = {kw.arg: kw.value for kw in handler.keywords}
    assert ast.literal_eval(keywords["goal_state"]) == "inactive"


def test_bringup_launch_remaps_every_graph_link_into_the_namespace():
    module = load(BRINGUP)
    links = {value for name, value in vars(topics).items() if name.isupper() and value.startswith("/vla3d/")}
    remapped = dict(module.remappings())
    assert set(remapped) == links
    assert all(target == source[1:] for source, target in remapped.items())   # relative: follows the namespace


def test_bringup_params_file_names_only_parameters_the_nodes_declare(ros_context, tmp_path):
    from vla3d_ros.ros.action_node import ActionNode
    from vla3d_ros.ros.inference_node import InferenceNode
    from vla3d_ros.ros.markers_node import MarkersNode

    module = load(BRINGUP)
    params = yaml.safe_load(Path(module.PARAMS_FILE).read_text())
    assert set(params) <= {"/**", *module.NODES.values()}
    config = runtime_config()
    nodes = {"vla3d_inference": InferenceNode(config, context=ros_context),
             "vla3d_action": ActionNode(config, context=ros_context),
             "vla3d_markers": MarkersNode(config, context=ros_context)}
    try:
        assert set(nodes) == set(module.NODES.values())
        for key, section in params.items():
            assert set(section) == {"ros__parameters"}, key
            for node_name, node in nodes.items():
                if key in ("/**", node_name):
                    undeclared = [p for p in section["ros__parameters"] if not node.has_parameter(p)]
                    assert not undeclared, f"{key} names {undeclared}, which {node_name} does not declare"
        # What the launch adds on top of the file is declared by every node too.
        for name in module.node_parameters("file", "robot.yaml", None, False)[1]:
            assert all(node.has_parameter(name) for node in nodes.values()), name
        # Every declared parameter says what it is; integers say their range.
        for node in nodes.values():
            for name in node.list_parameters([], 0).names:
                if name in ("use_sim_time", "start_type_description_service"):
                    continue    # rclpy's own
                descriptor = node.describe_parameter(name)
                assert len(descriptor.description) > 15, (node.get_name(), name)
                if isinstance(node.get_parameter(name).value, int):
                    assert descriptor.integer_range, (node.get_name(), name)
    finally:
        for node in nodes.values():
            node.destroy_node()


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


class Recorded:
    """Stands in for a launch / launch_ros class: keeps its arguments (launch is not installable
    here). Only the keyword names below are accepted: the ones launch_ros's classes take."""

    accepts: frozenset = frozenset()

    def __init__(self, *args, **kwargs):
        unknown = set(kwargs) - self.accepts
        assert not unknown, f"{type(self).__name__} takes no {sorted(unknown)}"
        self.args, self.kwargs = args, kwargs


def recorder(name: str, *accepts: str) -> type:
    return type(name, (Recorded,), {"accepts": frozenset(accepts)})


NODE_KEYWORDS = ("package", "executable", "name", "namespace", "parameters", "remappings", "ros_arguments",
                 "arguments", "output", "condition")


@pytest.fixture
def launch_stubs(monkeypatch):
    """Fake `launch`, `launch_ros` and `lifecycle_msgs` modules with the names bringup.launch.py uses."""
    import types

    classes = {
        "launch": {"LaunchDescription": recorder("LaunchDescription")},
        "launch.actions": {"DeclareLaunchArgument": recorder("DeclareLaunchArgument", "default_value", "description"),
                           "EmitEvent": recorder("EmitEvent", "event"), "LogInfo": recorder("LogInfo", "msg"),
                           "RegisterEventHandler": recorder("RegisterEventHandler")},
        "launch.conditions": {"IfCondition": recorder("IfCondition")},
        "launch.events": {"matches_action": lambda action: ("matches_action", action)},
        "launch.substitutions": {"LaunchConfiguration": recorder("LaunchConfiguration")},
        "launch_ros.actions": {"Node": recorder("Node", *NODE_KEYWORDS),
                               "LifecycleNode": recorder("LifecycleNode", *NODE_KEYWORDS)},
        "launch_ros.event_handlers": {"OnStateTransition": recorder("OnStateTransition", "target_lifecycle_node",
                                                                    "goal_state", "entities")},
        "launch_ros.events.lifecycle": {"ChangeState": recorder("ChangeState", "lifecycle_node_matcher",
                                                                "transition_id")},
        "launch_ros.parameter_descriptions": {"ParameterValue": recorder("ParameterValue", "value_type")},
    }
    for module_name in ("launch_ros", "launch_ros.events", *classes):
        module = types.ModuleType(module_name)
        module.__dict__.update(classes.get(module_name, {}))
        monkeypatch.setitem(sys.modules, module_name, module)
    return classes


def launch_configurations(value) -> set[str]:
    """Names of the LaunchConfiguration stubs anywhere inside `value`."""
    if isinstance(value, Recorded):
        own = {value.args[0]} if type(value).__name__ == "LaunchConfiguration" else set()
        return own | launch_configurations(list(value.args) + list(value.kwargs.values()))
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return set().union(*(launch_configurations(item) for item in value))
    return set()


def test_bringup_launch_description_wires_nodes_parameters_and_lifecycle(launch_stubs):
    from lifecycle_msgs.msg import Transition

    module = load(BRINGUP)
    entities = module.generate_launch_description().args[0]
    declared = {entity.args[0] for entity in entities if type(entity).__name__ == "DeclareLaunchArgument"}
    nodes = {entity.kwargs["executable"]: entity for entity in entities if type(entity).__name__.endswith("Node")}
    assert set(nodes) == set(module.NODES)
    for executable, node in nodes.items():
        assert node.kwargs["package"] == "vla3d_ros" and node.kwargs["name"] == module.NODES[executable]
        assert node.kwargs["remappings"] == module.remappings()
        assert node.kwargs["namespace"].args == ("namespace",)
        params_file, launch_values, *rest = node.kwargs["parameters"]
        assert params_file.args == ("params_file",)
        assert {key: value.args[0].args[0] for key, value in launch_values.items()} == \
            {"config": "config", "use_sim_time": "use_sim_time"}
        assert [set(extra) for extra in rest] == ([{"checkpoint"}] if executable == "inference_node" else [])
    # Every launch argument is used, and every one used is declared (a typo would be neither).
    assert launch_configurations(list(nodes.values())) == declared
    inference = nodes["inference_node"]
    assert type(inference).__name__ == "LifecycleNode"
    # Configure when the launch starts; activate once the node reports `inactive`.
    configure = entities[-1].kwargs["event"].kwargs
    assert configure == {"lifecycle_node_matcher": ("matches_action", inference),
                         "transition_id": Transition.TRANSITION_CONFIGURE}
    handler = next(entity.args[0] for entity in entities if type(entity).__name__ == "RegisterEventHandler")
    assert handler.kwargs["target_lifecycle_node"] is inference and handler.kwargs["goal_state"] == "inactive"
    activate = [e.kwargs["event"].kwargs for e in handler.kwargs["entities"] if type(e).__name__ == "EmitEvent"]
    assert activate == [{"lifecycle_node_matcher": ("matches_action", inference),
                         "transition_id": Transition.TRANSITION_ACTIVATE}]


def test_replay_launch_plays_the_configs_topics_on_clock_and_records_the_outputs():
    graph, record, play = load(ROOT / "launch" / "replay.launch.py").commands("/data/robot_bag", str(
        ROOT / "config" / "robot_sim.yaml"), "ckpt")
    assert graph[:2] == ["vla3d", "bringup"] and "--use-sim-time" in graph and graph[-1] == "ckpt"
    assert play[:4] == ["ros2", "bag", "play", "/data/robot_bag"] and "--clock" in play
    assert {"/sim/front/color/image_raw", "/sim/wrist/depth/image_raw", "/sim/joint_states", "/tf",
            "/tf_static"} <= set(play)
    assert record[:3] == ["ros2", "bag", "record"] and "/data/robot_bag_replay" in record
    assert {"/vla3d/action_chunk", "/vla3d/markers", "/sim/servo/delta_twist_cmds", "/diagnostics"} <= set(record)
