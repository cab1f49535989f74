"""`vla3d replay BAG`: play a recorded bag through the live graph (in-process, /clock + use_sim_time),
record its outputs (ActionChunk, Instance3DArray, completed points, markers) to a new MCAP and print
the open-loop action L1 per dimension against the recorded actions (`vla3d_ros.ros.replay`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "robot_sim.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="bag written by `vla3d convert` (directory, .mcap or .db3)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"runtime YAML whose cameras match the bag's (default {DEFAULT_CONFIG.name})")
    parser.add_argument("--checkpoint", default=None, help="policy checkpoint directory (overrides the config)")
    parser.add_argument("--output", type=Path, default=None, help="output bag (default: BAG_replay next to BAG)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for the graph's answer to one step before stepping on")


def run(args: argparse.Namespace) -> int:
    from vla3d_ros.ros.replay import replay_bag
    from vla3d_ros.runtime.config import ConfigError, load_runtime_config

    output = args.output or args.bag.with_name(f"{args.bag.stem}_replay")
    try:
        report = replay_bag(args.bag, load_runtime_config(args.config), output, checkpoint=args.checkpoint,
                            timeout=args.timeout)
    except (ConfigError, ValueError, FileExistsError, FileNotFoundError, RuntimeError) as error:
        print(f"vla3d replay: {error}", file=sys.stderr)
        return 1
    print(report.format())
    return 0 if report.chunks else 1
