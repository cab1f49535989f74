"""Real robot: the vla3d nodes on the camera topics and frames of a runtime config (config/*.yaml).

    ros2 launch vla3d_ros bringup.launch.py config:=/path/robot.yaml checkpoint:=/path/ckpt

One launch_ros action per node executable (`vla3d_ros/ros/executables.py`), each given the params
file `params_file` (default config/vla3d_params.yaml) plus the launch arguments as parameters:
- `inference_node`, a `LifecycleNode`: the policy (and, in its process, camera sync). The launch
  drives its lifecycle like ros2/demos' lifecycle launch files: a configure transition on start,
  activate once it reports `inactive`. A configure that fails (bad checkpoint) leaves it
  unconfigured and says why on /diagnostics; `ros2 lifecycle set /vla3d_inference configure` retries.
- `action_node` in a process of its own, so a stalled policy never delays its hold commands.
- `markers_node` (RViz markers; `markers:=false` leaves it out).

`namespace:=left` puts every node, and the graph's own topics (remapped to relative names), under
/left: two graphs on one DDS domain never hear each other; the robot-facing topics are the ones the
runtime YAML names (write them relative to follow the namespace too). The action node starts
disarmed and in dry-run: `ros2 service call /vla3d_action/arm std_srvs/srv/SetBool "{data: true}"`
and `/vla3d_action/dry_run` with false to move the arm.

Needs tf2_ros (every ROS 2 install has it): transforms cross processes on /tf. Without a ROS 2
install, `vla3d bringup --config FILE` runs the same nodes in one process.
"""
from pathlib import Path

from vla3d_ros.ros import topics

try:  # `launch` and `launch_ros` are part of a ROS 2 install, not of the pip-only environment
    import lifecycle_msgs.msg
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, RegisterEventHandler
    from launch.conditions import IfCondition
    from launch.events import matches_action
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode, Node
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from launch_ros.parameter_descriptions import ParameterValue
except ImportError:  # keeps this file importable (and its node table testable) without launch
    LaunchDescription = None

PACKAGE = "vla3d_ros"
PARAMS_FILE = str(Path(__file__).resolve().parents[1] / "config" / "vla3d_params.yaml")
# executable -> the node it is launched as (ros2 run vla3d_ros <executable>).
NODES = {"inference_node": "vla3d_inference", "action_node": "vla3d_action", "markers_node": "vla3d_markers"}
# The links between the graph's own nodes (the robot-facing topics come from the runtime YAML).
GRAPH_TOPICS = (topics.ACTION_CHUNK, topics.INSTANCES, topics.COMPLETED_POINTS, topics.INFERENCE_TIMING,
                topics.MARKERS, topics.GRIPPER_OPENING, topics.DRY_RUN_COMMANDS, topics.DRY_RUN_TRAJECTORY)


def remappings() -> list[tuple[str, str]]:
    """The graph's absolute topic names made relative, so they resolve inside the node namespace
    (identity in the root namespace)."""
    return [(topic, topic.lstrip("/")) for topic in GRAPH_TOPICS]


def node_parameters(params_file, config, checkpoint, use_sim_time) -> list:
    """What every node is given: the params file, then the launch arguments (later entries win)."""
    return [params_file, {"config": config, "use_sim_time": use_sim_time}] + (
        [{"checkpoint": checkpoint}] if checkpoint is not None else [])


def generate_launch_description():
    if LaunchDescription is None:
        raise RuntimeError("ros2 launch needs the `launch` and `launch_ros` packages; without them run "
                           "`vla3d bringup --config FILE`")
    namespace = LaunchConfiguration("namespace")
    common = dict(package=PACKAGE, namespace=namespace, output="screen", remappings=remappings())
    parameters = dict(
        params_file=LaunchConfiguration("params_file"),
        config=ParameterValue(LaunchConfiguration("config"), value_type=str),
        use_sim_time=ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool))
    inference = LifecycleNode(executable="inference_node", name=NODES["inference_node"],
                              parameters=node_parameters(checkpoint=ParameterValue(
                                  LaunchConfiguration("checkpoint"), value_type=str), **parameters), **common)
    action = Node(executable="action_node", name=NODES["action_node"],
                  parameters=node_parameters(checkpoint=None, **parameters), **common)
    markers = Node(executable="markers_node", name=NODES["markers_node"], condition=IfCondition(
        LaunchConfiguration("markers")), parameters=node_parameters(checkpoint=None, **parameters), **common)

    def transition(transition_id: int) -> EmitEvent:
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(inference),
                                           transition_id=transition_id))

    activate_when_configured = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=inference, goal_state="inactive",
        entities=[LogInfo(msg="vla3d_inference configured: activating"),
                  transition(lifecycle_msgs.msg.Transition.TRANSITION_ACTIVATE)]))
    return LaunchDescription([
        DeclareLaunchArgument("config", description="runtime YAML: cameras (topics, frames, extrinsics), rates, "
                                                    "watchdogs, safety limits, output adapter"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="policy checkpoint directory (model.safetensors + config.json); "
                                          "empty = the config's `checkpoint`"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="follow /clock (true for a simulator or bag playback)"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of every node and of the graph's own topics"),
        DeclareLaunchArgument("params_file", default_value=PARAMS_FILE,
                              description="ROS parameters of the nodes (see config/vla3d_params.yaml)"),
        DeclareLaunchArgument("markers", default_value="true",
                              description="also start the RViz markers node (true or false)"),
        activate_when_configured,
        inference, action, markers,
        transition(lifecycle_msgs.msg.Transition.TRANSITION_CONFIGURE),
    ])
