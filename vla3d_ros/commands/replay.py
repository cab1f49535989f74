"""`vla3d replay BAG --config robot.yaml`: play any bag (a robot's recording or one written by
`vla3d convert`) through the live graph (in-process, /clock + use_sim_time), record its outputs
(chunks, instances, completed points, markers, commands, diagnostics) to a new MCAP and report
camera rates, synchronised sets, inference latency, the real-time factor and the open-loop error
against the bag's recorded commands (`vla3d_ros.apps.replay`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "robot_sim.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="bag: a robot's recording or one written by `vla3d convert` "
                                               "(directory, .mcap or .db3)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"runtime YAML whose cameras match the bag's (default {DEFAULT_CONFIG.name})")
    parser.add_argument("--checkpoint", default=None, help="policy checkpoint directory (overrides the config)")
    parser.add_argument("--instruction", default=None,
                        help="instruction of every step (overrides the bag's instruction topic and the config)")
    parser.add_argument("--output", type=Path, default=None, help="output bag (default: BAG_replay next to BAG)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for the graph's answer to one step before stepping on")


def run(args: argparse.Namespace) -> int:
    from vla3d_ros.apps.replay import replay_bag
    from vla3d_ros.runtime.config import ConfigError, load_runtime_config

    output = args.output or args.bag.with_name(f"{args.bag.stem}_replay")
    try:
        report = replay_bag(args.bag, load_runtime_config(args.config), output, checkpoint=args.checkpoint,
                            instruction=args.instruction, timeout=args.timeout)
    except (ConfigError, ValueError, FileExistsError, FileNotFoundError, RuntimeError) as error:
        print(f"vla3d replay: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}",
              file=sys.stderr)
        return 1
    print(report.format())
    return 0 if report.chunks else 1
