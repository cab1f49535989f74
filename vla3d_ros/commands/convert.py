"""`vla3d convert SRC... DST`: ROS 2 bags -> episodes, or episodes -> bags; the direction follows from SRC.

- SRC are bags (rosbag2 directories, .mcap or .db3) or directories of bags -> episodes under DST,
  numbered in order from the first free index:
  - a robot's bag (`ros2 bag record`) is read through the runtime YAML given by `--config`
    (topics, frames, the `convert:` section; `vla3d_ros/data/bag_import.py`);
  - a bag written by `vla3d convert` (it holds /vla3d/episode_meta) converts back exactly, no
    config needed.
- SRC is an episode directory or a directory of episodes -> one bag per episode in DST, named
  after the episode directory (`--format mcap|sqlite3`, `--rgb raw|png|jpeg`, `--depth 32FC1|16UC1`).
Topics and encodings of the bags it writes: `vla3d_ros/data/bags.py` (module docstring).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vla3d_ros.data.bags import BAG_FORMATS, DEPTH_FORMATS, RGB_FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", type=Path, nargs="+", metavar="SRC... DST",
                        help="bags / dirs of bags (or one episode dir / episodes root), then the output dir")
    parser.add_argument("--config", type=Path, default=None,
                        help="runtime YAML of the robot whose bags these are (needed for bags not written by vla3d)")
    parser.add_argument("--instruction", default=None,
                        help="instruction of every episode (overrides the bag's instruction topic and the config)")
    parser.add_argument("--step-period", type=float, default=None,
                        help="seconds between episode steps (default: --checkpoint's, else the config's "
                             "convert.step_period, else 1 / rates.control_hz)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="take the step period of this checkpoint (the policy the episodes will train or fine-tune)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (shown on a terminal)")
    parser.add_argument("--format", choices=BAG_FORMATS, default="mcap",
                        help="bag storage when writing bags (default mcap)")
    parser.add_argument("--rgb", choices=RGB_FORMATS, default="raw",
                        help="RGB as raw rgb8 Image (default, lossless) or CompressedImage png/jpeg")
    parser.add_argument("--depth", choices=DEPTH_FORMATS, default="32FC1",
                        help="depth as 32FC1 metres (default, lossless) or 16UC1 millimetres")


def fail(message: str, code: int = 1) -> int:
    print(f"vla3d convert: error: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    from vla3d_ros.data import bags
    from vla3d_ros.data.bag_import import BagImportError, has_vla3d_meta, import_bags
    from vla3d_ros.data.episodes import list_episodes
    from vla3d_ros.runtime.config import ConfigError, load_runtime_config

    if len(args.paths) < 2:
        return fail("give at least one source and the output directory (SRC... DST)", 2)
    sources, dst = args.paths[:-1], args.paths[-1]
    missing = [str(src) for src in sources if not src.exists()]
    if missing:
        return fail(f"{', '.join(missing)} does not exist", 2)
    if args.step_period is not None and not args.step_period > 0:
        return fail(f"--step-period must be > 0 s, got {args.step_period}", 2)
    step_period = args.step_period
    if step_period is None and args.checkpoint is not None:
        from vla3d_ros.model.checkpoint import CheckpointError, read_checkpoint_meta

        try:
            step_period = float(read_checkpoint_meta(args.checkpoint)["step_period"])
        except (CheckpointError, OSError) as error:
            return fail(str(error))
    bag_paths = [bag for src in sources for bag in bags.find_bags(src)]
    if bag_paths:
        config = None
        if args.config is not None:
            try:
                config = load_runtime_config(args.config)
            except ConfigError as error:
                return fail(str(error))
        first_index = len(list_episodes(dst)) if dst.exists() else 0
        written, said = 0, set()
        try:
            for bag in bag_paths:
                if has_vla3d_meta(bag):
                    episode = bags.bag_to_episode(bag, dst, first_index + written)
                    print(f"{bag} -> {episode}")
                    written += 1
                    continue
                if config is None:
                    return fail(f"{bag} was not written by vla3d convert (no /vla3d/episode_meta): pass "
                                "--config robot.yaml to read a robot's bag (docs/real_robot.md)", 2)
                written += len(import_bags([bag], dst, config, instruction=args.instruction,
                                           step_period=step_period, first_index=first_index + written,
                                           progress=not args.no_progress and sys.stderr.isatty(), said=said))
        except (BagImportError, ValueError, FileExistsError) as error:
            return fail(str(error).splitlines()[0])
        return 0
    if len(sources) > 1:
        return fail("several sources are only allowed for bags", 2)
    src = sources[0]
    episode_dirs = list_episodes(src) or ([src] if _is_episode(src) else [])
    if not episode_dirs:
        return fail(f"{src} holds neither bags nor episodes", 2)
    written_bags = bags.episodes_to_bags(episode_dirs, dst, storage=args.format,
                                         rgb_format=args.rgb, depth_format=args.depth)
    for episode, bag in zip(episode_dirs, written_bags):
        print(f"{episode} -> {bag}")
    return 0


def _is_episode(path: Path) -> bool:
    from vla3d_ros.data.episodes import EpisodeReader

    try:
        EpisodeReader(path)
    except (FileNotFoundError, ValueError, OSError):
        return False
    return True
