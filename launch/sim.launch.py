"""Sim in the loop: the MuJoCo tabletop behind the sim bridge, driven by the vla3d graph.

    ros2 launch vla3d_ros sim.launch.py task:=pick_place_bowl checkpoint:=/path/ckpt episodes:=3

Runs `vla3d bringup --sim TASK` (the graph of `vla3d_ros.ros.graph.build_graph` plus the sim bridge,
in lockstep with sim time) and prints each episode's outcome.

An application rather than a set of nodes: the simulator advances only once the graph has answered,
which needs the graph in the simulator's process, so this file runs the `vla3d` command
(`ExecuteProcess`). A real robot's nodes are launch_ros actions: `bringup.launch.py`.
"""
from pathlib import Path

try:
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
except ImportError:
    LaunchDescription = None

SIM_CONFIG = str(Path(__file__).resolve().parents[1] / "config" / "robot_sim.yaml")


def commands(task: str, config: str = SIM_CONFIG, checkpoint: str = "", episodes: str = "1",
             max_steps: str = "100", seed: str = "0") -> list[list[str]]:
    command = ["vla3d", "bringup", "--config", config, "--sim", task, "--episodes", episodes,
               "--max-steps", max_steps, "--seed", seed]
    return [command + (["--checkpoint", checkpoint] if checkpoint else [])]


def _processes(context):
    names = ("task", "config", "checkpoint", "episodes", "max_steps", "seed")
    values = [LaunchConfiguration(name).perform(context) for name in names]
    return [ExecuteProcess(cmd=cmd, output="screen", name="vla3d_sim") for cmd in commands(*values)]


def generate_launch_description():
    if LaunchDescription is None:
        raise RuntimeError("ros2 launch needs the `launch` package; without it run "
                           "`vla3d bringup --config config/robot_sim.yaml --sim TASK`")
    return LaunchDescription([
        DeclareLaunchArgument("task", default_value="pick_place_bowl",
                              description="simulated task: pick_place_bowl, stack_cubes or push_to_zone"),
        DeclareLaunchArgument("config", default_value=SIM_CONFIG,
                              description="runtime YAML of the simulated robot (cameras, rates, limits)"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="policy checkpoint directory; empty = the config's `checkpoint`"),
        DeclareLaunchArgument("episodes", default_value="1", description="number of episodes to run"),
        DeclareLaunchArgument("max_steps", default_value="100", description="control steps per episode"),
        DeclareLaunchArgument("seed", default_value="0", description="seed of the first episode"),
        OpaqueFunction(function=_processes),
    ])
