"""`vla3d convert SRC DST`: episodes <-> ROS 2 bags; the direction follows from SRC.

- SRC is a bag (rosbag2 directory, .mcap or .db3) or a directory of bags -> episodes under DST,
  numbered in bag-name order from the first free index.
- SRC is an episode directory or a directory of episodes -> one bag per episode in DST, named
  after the episode directory (`--format mcap|sqlite3`, `--rgb raw|png|jpeg`, `--depth 32FC1|16UC1`).
Topics and encodings: `vla3d_ros/data/bags.py` (module docstring).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vla3d_ros.data.bags import BAG_FORMATS, DEPTH_FORMATS, RGB_FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="episode dir, episodes root, bag, or dir of bags")
    parser.add_argument("dst", type=Path, help="output dir (bags or episodes root)")
    parser.add_argument("--format", choices=BAG_FORMATS, default="mcap",
                        help="bag storage when writing bags (default mcap)")
    parser.add_argument("--rgb", choices=RGB_FORMATS, default="raw",
                        help="RGB as raw rgb8 Image (default, lossless) or CompressedImage png/jpeg")
    parser.add_argument("--depth", choices=DEPTH_FORMATS, default="32FC1",
                        help="depth as 32FC1 metres (default, lossless) or 16UC1 millimetres")


def run(args: argparse.Namespace) -> int:
    from vla3d_ros.data import bags
    from vla3d_ros.data.episodes import list_episodes

    if not args.src.exists():
        print(f"vla3d convert: {args.src} does not exist", file=sys.stderr)
        return 2
    bag_paths = bags.find_bags(args.src)
    if bag_paths:
        first_index = len(list_episodes(args.dst)) if args.dst.exists() else 0
        for offset, bag in enumerate(bag_paths):
            episode = bags.bag_to_episode(bag, args.dst, first_index + offset)
            print(f"{bag} -> {episode}")
        return 0
    episode_dirs = list_episodes(args.src) or ([args.src] if _is_episode(args.src) else [])
    if not episode_dirs:
        print(f"vla3d convert: {args.src} holds neither bags nor episodes", file=sys.stderr)
        return 2
    written = bags.episodes_to_bags(episode_dirs, args.dst, storage=args.format,
                                    rgb_format=args.rgb, depth_format=args.depth)
    for episode, bag in zip(episode_dirs, written):
        print(f"{episode} -> {bag}")
    return 0


def _is_episode(path: Path) -> bool:
    from vla3d_ros.data.episodes import EpisodeReader

    try:
        EpisodeReader(path)
    except (FileNotFoundError, ValueError, OSError):
        return False
    return True
