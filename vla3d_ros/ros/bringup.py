"""`vla3d bringup --config FILE`: the ROS 2 node graph in this process (what the launch files start).

The subcommand module `vla3d_ros.commands.bringup` re-exports this one (rclpy stays in `ros/`).

All roles (camera_sync, inference, action, markers) by default, in one process
(`graph.PolicyThreadExecutor`: the inference node on its own thread); `--roles` picks a subset
(a launch file runs one process per group of `vla3d_ros.ros.graph.process_groups`). The
inference node is configured and activated on start; Ctrl-C shuts everything down cleanly.
`--sim TASK` adds the MuJoCo sim bridge (sim time, lockstep) and prints the episode outcomes.
"""
from __future__ import annotations

import argparse
import select
import signal
import socket
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

    from vla3d_ros.ros.graph import build_graph, spinning
    from vla3d_ros.runtime.config import ConfigError

    roles = tuple(role.strip() for role in args.roles.split(",") if role.strip())
    # A process started in the background of a non-interactive shell inherits SIGINT as ignored,
    # and Python then never raises KeyboardInterrupt: Ctrl-C (and launch's SIGINT/SIGTERM) would
    # be lost. Stopping on both is this command's contract, so install the handlers explicitly.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, signal.default_int_handler)
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
        # The executor spins in a background thread; this one only waits, so Ctrl-C lands here.
        with CtrlCWait() as waiter, spinning(graph.executor(multithreaded=not args.single_threaded),
                                             on_stop=waiter.wake):
            print(f"vla3d bringup: {', '.join(graph.nodes)} running (Ctrl-C to stop)", flush=True)
            waiter.wait(args.duration if args.duration > 0 else None)
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


class CtrlCWait:
    """Wait for Ctrl-C (KeyboardInterrupt, raised in `wait`), `wake()` or a timeout; main thread only.

    A lock or Event wait can miss Ctrl-C: a SIGINT that lands between the interpreter's last signal
    check and the blocking call wakes nothing, and the handler only runs once the wait ends. SIGINT
    also writes to the signal wakeup fd, which `select` watches, so it always ends the wait.
    """

    def __enter__(self) -> CtrlCWait:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        return self

    def wake(self) -> None:
        """From any thread: end the wait."""
        try:
            self._write.send(b"\0")
        except BlockingIOError:
            pass  # the buffer is full of wake-ups already

    def wait(self, timeout: float | None) -> None:
        select.select([self._read], [], [], timeout)

    def __exit__(self, *exc_info) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        self._read.close()
        self._write.close()


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
