"""The node executables, what `ros2 run vla3d_ros <executable> --ros-args ...` and the launch_ros
`Node` / `LifecycleNode` actions of `launch/bringup.launch.py` start (installed by CMakeLists.txt
from `scripts/`):

- `inference_node`: the lifecycle node `vla3d_inference` and, in the same process, the camera sync
  node `vla3d_camera_sync` it reads observations from (handed over as Python objects: no image
  round trip through DDS, see `graph.py`). It starts unconfigured: `ros2 lifecycle set
  /vla3d_inference configure`, then `activate` (the launch file emits both transitions).
- `action_node` (`vla3d_action`) and `markers_node` (`vla3d_markers`).

Every node reads the runtime YAML named by its read-only `config` parameter (`common.declare_config`)
and takes the rest from its params file (`config/vla3d_params.yaml`). A bad config or parameter
ends the process with one line on stderr and exit code 1; SIGINT / SIGTERM end it cleanly (0).

Remapping `__node:=NAME` without a node prefix renames every node of a process (rcl's rule). In
`inference_node` it is meant for the lifecycle node (launch_ros's `LifecycleNode(name=...)` passes
one), so it is narrowed to `vla3d_inference:__node:=NAME`; the camera sync node keeps its name
unless remapped by its own (`-r vla3d_camera_sync:__node:=...`).

Without tf2_ros (pip-only machines) a process cannot see the transforms of others: each process
then has a `TransformCache` of its own (camera extrinsics from the config only; the action node
holds the arm, for want of an end-effector pose). There, run the whole graph with `vla3d bringup`.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

INFERENCE_NODE_NAME = "vla3d_inference"


def narrow_node_remaps(argv: Sequence[str], node_name: str) -> list[str]:
    """`argv` with every un-prefixed `__node:=` / `__name:=` remap inside a `--ros-args` section
    applied to `node_name` only."""
    narrowed, in_ros_args, previous = [], False, None
    for token in argv:
        if token == "--ros-args":
            in_ros_args = True
        elif token == "--":
            in_ros_args = False
        elif in_ros_args and previous in ("-r", "--remap") and token.startswith(("__node:=", "__name:=")):
            token = f"{node_name}:{token}"
        narrowed.append(token)
        previous = token
    return narrowed


def _run(executable: str, build: Callable, argv: Sequence[str]) -> int:
    """Init rclpy with `argv`'s ROS arguments, `build(context, transform_cache) -> {role: node}`,
    spin the nodes until stopped; the exit code (`graph.run_graph_process`)."""
    from vla3d_ros.ros.graph import NodeGraph, run_graph_process, serve
    from vla3d_ros.ros.tf import HAVE_TF2, TransformCache

    def build_graph(context) -> NodeGraph:
        cache = None if HAVE_TF2 else TransformCache()
        nodes = build(context, cache)
        return NodeGraph(next(iter(nodes.values())).config, nodes, cache)

    def run_graph(graph: NodeGraph) -> int:
        names = ", ".join(node.get_fully_qualified_name() for node in graph.all_nodes())
        serve(graph, ready=lambda: graph.all_nodes()[0].get_logger().info(f"{executable}: {names} running"))
        return 0

    return run_graph_process(executable, build_graph, run_graph, argv)


def _with_transforms(node, cache):
    from vla3d_ros.ros.tf import make_transform_source

    node.transforms = make_transform_source(node, cache)
    return node


def inference_main(argv: Sequence[str] | None = None) -> int:
    def build(context, cache):
        from vla3d_ros.ros.camera_sync_node import CameraSyncNode
        from vla3d_ros.ros.inference_node import InferenceNode

        inference = InferenceNode(context=context, name=INFERENCE_NODE_NAME)
        try:
            sync = _with_transforms(CameraSyncNode(inference.config, context=context), cache)
        except BaseException:
            inference.destroy_node()
            raise
        inference.observations = sync
        return {"camera_sync": sync, "inference": inference}

    return _run("inference_node", build, narrow_node_remaps(sys.argv if argv is None else argv, INFERENCE_NODE_NAME))


def action_main(argv: Sequence[str] | None = None) -> int:
    def build(context, cache):
        from vla3d_ros.ros.action_node import ActionNode
        return {"action": _with_transforms(ActionNode(context=context), cache)}

    return _run("action_node", build, sys.argv if argv is None else argv)


def markers_main(argv: Sequence[str] | None = None) -> int:
    def build(context, cache):
        from vla3d_ros.ros.markers_node import MarkersNode
        return {"markers": _with_transforms(MarkersNode(context=context), cache)}

    return _run("markers_node", build, sys.argv if argv is None else argv)
