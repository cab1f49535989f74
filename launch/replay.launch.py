"""Replay any recorded bag through the vla3d graph on a full ROS 2 install (`vla3d replay` without one).

    ros2 launch vla3d_ros replay.launch.py bag:=/path/bag config:=/path/robot.yaml [checkpoint:=...] [output:=...]

Three processes: `ros2 bag play --clock` publishes /clock and the config's topics (cameras,
CameraInfo, depth, joint states, gripper, instruction, /tf, /tf_static) from the bag; the graph
`vla3d bringup --use-sim-time` runs on them (tf2 and message_filters when installed); and
`ros2 bag record` writes the graph's outputs (chunks, instances, completed points, markers,
commands, diagnostics) to a new MCAP. Without rosbag2 (pip-only machines) `vla3d replay BAG
--config robot.yaml` does the same in one process and also prints the report (rates, sets,
latency, real-time factor, open-loop error).
"""
from vla3d_ros.commands.replay import DEFAULT_CONFIG

try:
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
except ImportError:
    LaunchDescription = None


def played_topics(config_path: str) -> list[str]:
    """The topics of the bag the graph listens to (from the runtime YAML), plus TF."""
    from vla3d_ros.ros import topics
    from vla3d_ros.runtime.config import load_runtime_config

    config = load_runtime_config(config_path)
    played = [topic for camera in config.cameras
              for topic in (camera.topics.color, camera.topics.camera_info, camera.topics.depth) if topic]
    played += [config.joint_state_topic, topics.GRIPPER_OPENING, config.instruction_topic, "/tf", "/tf_static"]
    return played


def recorded_topics(config_path: str) -> list[str]:
    from vla3d_ros.ros.output_recorder import RECORDED_OUTPUTS, command_outputs
    from vla3d_ros.runtime.config import load_runtime_config

    return sorted(set(RECORDED_OUTPUTS) | set(command_outputs(load_runtime_config(config_path))))


def commands(bag: str, config: str = str(DEFAULT_CONFIG), checkpoint: str = "", output: str = "") -> list[list[str]]:
    graph = ["vla3d", "bringup", "--config", config, "--use-sim-time"]
    graph += ["--checkpoint", checkpoint] if checkpoint else []
    record = ["ros2", "bag", "record", "--use-sim-time", "-s", "mcap", "-o", output or f"{bag.rstrip('/')}_replay",
              "--topics", *recorded_topics(config)]
    play = ["ros2", "bag", "play", bag, "--clock", "--topics", *played_topics(config)]
    return [graph, record, play]


def _processes(context):
    values = [LaunchConfiguration(name).perform(context) for name in ("bag", "config", "checkpoint", "output")]
    names = ("vla3d_graph", "vla3d_replay_record", "vla3d_replay_play")
    return [ExecuteProcess(cmd=cmd, output="screen", name=name) for cmd, name in zip(commands(*values), names)]


def generate_launch_description():
    if LaunchDescription is None:
        raise RuntimeError("ros2 launch needs the `launch` package; without it run `vla3d replay BAG --config ...`")
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="any bag: a robot's recording or one from `vla3d convert`"),
        DeclareLaunchArgument("config", default_value=str(DEFAULT_CONFIG),
                              description="runtime YAML naming the bag's topics and frames"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="policy checkpoint directory; empty = the config's `checkpoint`"),
        DeclareLaunchArgument("output", default_value="",
                              description="output bag path; empty = <bag>_replay next to the bag"),
        OpaqueFunction(function=_processes),
    ])
