"""The node executables as launch_ros starts them (`ros2 run vla3d_ros <node> --ros-args ...`):
each in a subprocess with the shipped params file, driven and inspected from this process over
DDS through the same services `ros2 lifecycle` and `ros2 param` call. (launch_ros itself is not
installable here: test_ros_launch.py checks the launch file statically.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import rclpy
import yaml
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor

from ros_graph_fixtures import runtime_config, save_tiny_checkpoint
from vla3d_ros.ros.executables import narrow_node_remaps

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = ROOT / "config" / "vla3d_params.yaml"
# Start-up (python, torch, rclpy) takes seconds, much longer on a loaded machine: the bounds
# below only catch a broken start-up or a hang, never a slow one.
TIMEOUT = 120.0


def start(executable: str, *ros_args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / executable), "--ros-args", *ros_args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path])))


def stop(process: subprocess.Popen) -> tuple[int, str]:
    """Ctrl-C the executable; its exit code and stderr."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"the executable did not exit within 60 s of Ctrl-C:\n{stderr[-3000:]}")
    return process.returncode, stderr


@pytest.fixture
def client(ros_context):
    """A node of this process calling the executables' services, and a helper to call one."""
    node = rclpy.create_node("vla3d_test_client", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)

    def call(service_type, name: str, request, process: subprocess.Popen):
        service = node.create_client(service_type, name)
        try:
            if not service.wait_for_service(timeout_sec=TIMEOUT):
                process.kill()
                pytest.fail(f"{name} never appeared; stderr:\n{process.communicate()[1][-3000:]}")
            future = service.call_async(request)
            executor.spin_until_future_complete(future, timeout_sec=TIMEOUT)
            assert future.done(), f"{name} did not answer within {TIMEOUT} s"
            return future.result()
        finally:
            node.destroy_client(service)

    yield node, call
    executor.shutdown()
    node.destroy_node()


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(runtime_config().to_dict()))
    return path


def test_inference_node_walks_its_lifecycle_under_a_launch_style_name_and_namespace(client, config_file, tmp_path):
    node, call = client
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny")
    # What launch_ros's LifecycleNode(name=..., namespace=..., parameters=[file, {...}]) passes.
    process = start("inference_node", "--params-file", str(PARAMS_FILE), "-p", f"config:={config_file}",
                    "-p", f"checkpoint:={tmp_path / 'missing'}", "-r", "__node:=policy", "-r", "__ns:=/left")
    try:
        state = call(GetState, "/left/policy/get_state", GetState.Request(), process)
        assert state.current_state.id == State.PRIMARY_STATE_UNCONFIGURED
        # The camera sync node shares the process but keeps its own name (the rename is the lifecycle node's).
        # A service answering does not mean node discovery has reached this process: wait on the graph.
        assert node.wait_for_node("/left/vla3d_camera_sync", TIMEOUT), node.get_node_names_and_namespaces()

        def transition(transition_id: int) -> bool:
            request = ChangeState.Request(transition=Transition(id=transition_id))
            return call(ChangeState, "/left/policy/change_state", request, process).success

        # A checkpoint that cannot be loaded fails the transition, not the process.
        assert not transition(Transition.TRANSITION_CONFIGURE)
        assert call(GetState, "/left/policy/get_state", GetState.Request(), process).current_state.id == \
            State.PRIMARY_STATE_UNCONFIGURED
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(checkpoint))
        result = call(SetParameters, "/left/policy/set_parameters",
                      SetParameters.Request(parameters=[Parameter(name="checkpoint", value=value)]), process)
        assert result.results[0].successful
        assert transition(Transition.TRANSITION_CONFIGURE)
        assert transition(Transition.TRANSITION_ACTIVATE)
        assert call(GetState, "/left/policy/get_state", GetState.Request(), process).current_state.id == \
            State.PRIMARY_STATE_ACTIVE
        assert transition(Transition.TRANSITION_DEACTIVATE)
    finally:
        code, stderr = stop(process)
    assert code == 0, stderr[-3000:]


@pytest.mark.parametrize("executable, node", [("action_node", "vla3d_action"), ("markers_node", "vla3d_markers")])
def test_node_takes_its_parameters_from_the_params_file_and_describes_them(client, config_file, tmp_path,
                                                                          executable, node):
    _, call = client
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"use_sim_time": True}}}))
    process = start(executable, "--params-file", str(params), "-p", f"config:={config_file}")
    try:
        values = call(GetParameters, f"/{node}/get_parameters",
                      GetParameters.Request(names=["config", "use_sim_time"]), process).values
        assert values[0].string_value == str(config_file)
        assert values[1].bool_value is True     # from the params file, not overridden by the node
        described = call(DescribeParameters, f"/{node}/describe_parameters",
                         DescribeParameters.Request(names=["config"]), process).descriptors[0]
        assert described.read_only and "runtime YAML" in described.description
    finally:
        code, stderr = stop(process)
    assert code == 0, stderr[-3000:]


@pytest.mark.parametrize("args, expected", [
    (("-p", "torch_threads:=0"), "torch_threads"),          # outside its declared range
    ((), "parameter `config` is empty"),
], ids=["out-of-range", "no-config"])
def test_a_bad_parameter_ends_the_executable_with_one_line(config_file, args, expected):
    config = ("-p", f"config:={config_file}") if args else ()
    process = start("inference_node", "--params-file", str(PARAMS_FILE), *config, *args)
    try:
        _, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 1, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("inference_node: error: ") and expected in lines[-1], stderr[-3000:]
    assert "Traceback" not in stderr


def test_only_unprefixed_node_renames_inside_ros_args_are_narrowed():
    argv = ["exe", "-r", "__node:=x", "--ros-args", "-r", "__node:=policy", "--remap", "__name:=p2",
            "-r", "other:__node:=y", "-r", "/a:=/b", "-p", "config:=c", "--", "-r", "__node:=z"]
    assert narrow_node_remaps(argv, "vla3d_inference") == [
        "exe", "-r", "__node:=x", "--ros-args", "-r", "vla3d_inference:__node:=policy",
        "--remap", "vla3d_inference:__name:=p2", "-r", "other:__node:=y", "-r", "/a:=/b", "-p", "config:=c",
        "--", "-r", "__node:=z"]
