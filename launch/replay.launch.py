"""Replay a recorded bag through the vla3d graph and record its outputs (`vla3d replay`).

    ros2 launch vla3d_ros replay.launch.py bag:=/path/episode config:=/path/robot_sim.yaml

The replayer publishes /clock and the bag's data on the config's topics, runs the graph built by
`vla3d_ros.ros.graph.build_graph` in the same process (use_sim_time), writes the outputs to a new
MCAP and prints the open-loop action error against the recorded actions.

An application rather than a set of nodes (the replayer paces the bag by the graph's answers and
exits when the bag ends), so this file runs the `vla3d` command (`ExecuteProcess`). A real robot's
nodes are launch_ros actions: `bringup.launch.py`.
"""
from vla3d_ros.commands.replay import DEFAULT_CONFIG

try:
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
except ImportError:
    LaunchDescription = None


def commands(bag: str, config: str = str(DEFAULT_CONFIG), checkpoint: str = "", output: str = "") -> list[list[str]]:
    command = ["vla3d", "replay", bag, "--config", config]
    command += ["--checkpoint", checkpoint] if checkpoint else []
    command += ["--output", output] if output else []
    return [command]


def _processes(context):
    values = [LaunchConfiguration(name).perform(context) for name in ("bag", "config", "checkpoint", "output")]
    return [ExecuteProcess(cmd=cmd, output="screen", name="vla3d_replay") for cmd in commands(*values)]


def generate_launch_description():
    if LaunchDescription is None:
        raise RuntimeError("ros2 launch needs the `launch` package; without it run `vla3d replay BAG`")
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="bag written by `vla3d convert` (directory, .mcap or .db3)"),
        DeclareLaunchArgument("config", default_value=str(DEFAULT_CONFIG),
                              description="runtime YAML whose cameras match the bag's"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="policy checkpoint directory; empty = the config's `checkpoint`"),
        DeclareLaunchArgument("output", default_value="",
                              description="output bag path; empty = <bag>_replay next to the bag"),
        OpaqueFunction(function=_processes),
    ])
