"""`vla3d bringup --config FILE`: the ROS 2 node graph in this process, without `ros2 launch`.

`vla3d_ros.commands.bringup` parses the arguments; this module composes the nodes of `vla3d_ros.ros`.

All roles (camera_sync, inference, action, markers) by default, in one process
(`graph.PolicyThreadExecutor`: the inference node on its own thread); `--roles` picks a subset
(`launch/bringup.launch.py` starts the node executables of `ros/executables.py` instead). The
inference node is configured and activated on start; Ctrl-C shuts everything down cleanly.
`--sim TASK` adds the MuJoCo sim bridge (sim time, lockstep) and prints the episode outcomes.
"""
from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from vla3d_ros.ros.graph import build_graph, run_graph_process, serve

    roles = tuple(role.strip() for role in args.roles.split(",") if role.strip())
    sim = args.sim is not None

    def build(context):
        return build_graph(args.config, roles=roles, context=context, use_sim_time=args.use_sim_time or sim,
                           checkpoint=args.checkpoint, trigger="observation" if sim else "timer")

    def run_graph(graph) -> int:
        if sim:
            return _run_sim(graph, args)
        graph.start()
        serve(graph, multithreaded=not args.single_threaded, duration=args.duration if args.duration > 0 else None,
              ready=lambda: print(f"vla3d bringup: {', '.join(graph.nodes)} running (Ctrl-C to stop)", flush=True))
        return 0

    return run_graph_process("vla3d bringup", build, run_graph)


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
