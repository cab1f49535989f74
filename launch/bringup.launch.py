"""Real robot: the vla3d graph on the camera topics and frames of a runtime config (config/*.yaml).

    ros2 launch vla3d_ros bringup.launch.py config:=/path/robot.yaml checkpoint:=/path/ckpt

One `vla3d bringup` process per group of `vla3d_ros.ros.graph.process_groups` (with tf2_ros: the
perception + inference process, and the action node on its own so a stalled policy can never
delay its hold commands). The node graph itself is built by `vla3d_ros.ros.graph.build_graph`.
The action node starts disarmed and in dry-run: `ros2 service call /vla3d_action/arm
std_srvs/srv/SetBool "{data: true}"` and `/vla3d_action/dry_run` with false to move the arm.
"""
from vla3d_ros.ros.graph import ROLES, bringup_command, process_groups

try:  # `launch` is part of a ROS 2 install, not of the pip-only environment
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
except ImportError:  # keeps this file importable (and its commands testable) without launch
    LaunchDescription = None


def commands(config: str, checkpoint: str = "", use_sim_time: bool = False) -> list[list[str]]:
    """The process command lines this launch file starts."""
    return [bringup_command(config, group, checkpoint=checkpoint or None, use_sim_time=use_sim_time)
            for group in process_groups(ROLES)]


def _processes(context):
    config = LaunchConfiguration("config").perform(context)
    checkpoint = LaunchConfiguration("checkpoint").perform(context)
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() == "true"
    return [ExecuteProcess(cmd=cmd, output="screen", name="vla3d_" + "_".join(group))
            for cmd, group in zip(commands(config, checkpoint, use_sim_time), process_groups(ROLES))]


def generate_launch_description():
    if LaunchDescription is None:
        raise RuntimeError("ros2 launch needs the `launch` package; without it run `vla3d bringup --config FILE`")
    return LaunchDescription([
        DeclareLaunchArgument("config", description="runtime YAML: cameras (topics, frames, extrinsics), rates, "
                                                    "watchdogs, safety limits, output adapter"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="policy checkpoint directory (model.safetensors + config.json); "
                                          "empty = the config's `checkpoint`"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="follow /clock (true for a simulator or bag playback)"),
        OpaqueFunction(function=_processes),
    ])
