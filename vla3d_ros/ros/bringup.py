"""`vla3d bringup --config FILE`: the ROS 2 node graph in this process, without `ros2 launch`.

The subcommand module `vla3d_ros.commands.bringup` re-exports this one (rclpy stays in `ros/`).

All roles (camera_sync, inference, action, markers) by default, in one process
(`graph.PolicyThreadExecutor`: the inference node on its own thread); `--roles` picks a subset
(`launch/bringup.launch.py` starts the node executables of `ros/executables.py` instead). The
inference node is configured and activated on start; Ctrl-C shuts everything down cleanly.
`--sim TASK` adds the MuJoCo sim bridge (sim time, lockstep) and prints the episode outcomes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "run the ROS 2 node graph in-process from a config file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="runtime YAML (see config/robot_sim.yaml)")
    parser.add_argument("--roles", default="camera_sync,inference,action,markers",
                        help="comma-separated roles to run in this process (default: all)")
    parser.add_argument("--checkpoint", default=None, help="policy checkpoint directory (overrides the config)")
    parser.add_argument("--use-sim-time", action="store_true", help="follow /clock instead of the system clock")
    parser.add_argument("--single-threaded", action="store_true",
                        help="one executor thread (default: multi-threaded, so inference never delays control)")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop after this many seconds (default 0: run until Ctrl-C)")
    parser.add_argument("--sim", metavar="TASK", default=None,
                        help="also run the MuJoCo sim bridge on this task (implies sim time)")
    parser.add_argument("--episodes", type=int, default=1, help="sim episodes (with --sim)")
    parser.add_argument("--max-steps", type=int, default=100, help="steps per sim episode (with --sim)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first sim episode (with --sim)")
    parser.add_argument("--image-size", type=int, default=128, help="sim camera image size (with --sim)")


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from vla3d_ros.ros.graph import build_graph, serve, stop_on_sigint_and_sigterm
    from vla3d_ros.runtime.config import ConfigError

    roles = tuple(role.strip() for role in args.roles.split(",") if role.strip())
    stop_on_sigint_and_sigterm()
    context = rclpy.context.Context()
    rclpy.init(context=context)
    graph = None
    try:
        sim = args.sim is not None
        graph = build_graph(args.config, roles=roles, context=context, use_sim_time=args.use_sim_time or sim,
                            checkpoint=args.checkpoint, trigger="observation" if sim else "timer")
        if sim:
            return _run_sim(graph, args)
        graph.start()
        serve(graph, multithreaded=not args.single_threaded, duration=args.duration if args.duration > 0 else None,
              ready=lambda: print(f"vla3d bringup: {', '.join(graph.nodes)} running (Ctrl-C to stop)", flush=True))
        return 0
    except (ConfigError, ValueError, RuntimeError) as error:
        print(f"vla3d bringup: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        if graph is not None:
            graph.destroy()
        if context.ok():
            rclpy.shutdown(context=context)


def _run_sim(graph, args: argparse.Namespace) -> int:
    from vla3d_ros.ros.sim_bridge_node import run_sim_episodes
    from vla3d_ros.sim.env import TabletopEnv

    env = TabletopEnv(args.sim, image_size=(args.image_size, args.image_size), cameras=graph.config.camera_names,
                      seed=args.seed)
    try:
        result = run_sim_episodes(graph, env, episodes=args.episodes, max_steps=args.max_steps, seed=args.seed)
    finally:
        env.close()
    for outcome in result.outcomes:
        print(f"episode seed={outcome.seed}: {'SUCCESS' if outcome.success else 'failure'} after "
              f"{outcome.steps} steps ({outcome.instruction!r})")
    print(f"{sum(o.success for o in result.outcomes)}/{len(result.outcomes)} successful; {result.chunks} chunks, "
          f"{result.timeouts} timeouts")
    return 0
