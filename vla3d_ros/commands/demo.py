"""`vla3d demo`: the sim + ROS 2 graph + checkpoint run; it runs in `vla3d_ros.apps.demo` (rclpy)."""
from __future__ import annotations

import argparse
from pathlib import Path

from vla3d_ros.evaluate.rollout import EVAL_SEED_BASE
from vla3d_ros.apps.demo import BAG_NAME, DEFAULT_CONFIG, DEFAULT_TASK, OVERLAY_NAME, run

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="policy checkpoint directory (default: the shipped vla3d_ros/assets/checkpoints/default)")
    parser.add_argument("--task", default=None,
                        help=f"pick_place_bowl, stack_cubes or push_to_zone (default: the checkpoint's, else {DEFAULT_TASK})")
    parser.add_argument("--episodes", type=int, default=2, help="episodes to run (default 2)")
    parser.add_argument("--max-steps", type=int, default=None, help="step budget per episode (default: the task's)")
    parser.add_argument("--out", type=Path, default=Path("demo_output"),
                        help=f"output directory for {OVERLAY_NAME} and {BAG_NAME} (default demo_output/)")
    # Held-out layouts by default (the evaluation's first episodes): seeds from 0 are the layouts
    # the shipped checkpoint was trained on, and a demo there would overstate it.
    parser.add_argument("--seed", type=int, default=EVAL_SEED_BASE,
                        help=f"seed of the first episode, then seed+1, ... (default {EVAL_SEED_BASE}: the "
                             "evaluation's held-out layouts; 0.. are training layouts)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="sim camera image size in pixels (default: the checkpoint's)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"runtime YAML of the simulated robot (default {DEFAULT_CONFIG.name})")
    parser.add_argument("--overlay-steps", type=int, default=3, help="time points (rows) in the overlay PNG")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads of the policy (default 1: see the module docstring)")
    parser.add_argument("--ros-domain-id", type=int, default=None,
                        help="DDS domain of the run (default: $ROS_DOMAIN_ID if set, else a private one, printed)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="wall seconds to wait for the graph's answer to one step before stepping on")
