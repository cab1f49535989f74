"""`vla3d bringup`: the in-process node graph; it runs in `vla3d_ros.apps.bringup` (rclpy)."""
from __future__ import annotations

import argparse
from pathlib import Path

from vla3d_ros.apps.bringup import run

__all__ = ["add_arguments", "run"]


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

