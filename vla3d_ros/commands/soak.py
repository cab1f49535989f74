"""`vla3d soak --minutes N [--out DIR]`: the full graph under 3 cameras x 30 Hz of synthetic RGB-D for N
minutes, sampling RSS, queue depths, watchdog trips and drops every second (see vla3d_ros.apps.soak).
Writes soak.csv, soak.png, soak.json and the recorded outputs to DIR; exits 1 if a criterion fails."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, required=True, help="how long to run (after start-up)")
    parser.add_argument("--out", type=Path, default=Path("soak"), help="output directory (default: ./soak)")
    parser.add_argument("--cameras", type=int, default=3, help="synthetic RGB-D cameras (default 3)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate in Hz (default 30)")
    parser.add_argument("--preset", choices=("tiny", "cpu"), default="tiny",
                        help="policy preset, random weights (default tiny)")
    parser.add_argument("--image-size", type=int, default=128, help="camera image size in pixels (default 128)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds excluded from the criteria (default: 20%% of the run, at most 30 s)")
    parser.add_argument("--checkpoint", default=None, help="use this checkpoint instead of a fresh random one")


def run(args: argparse.Namespace) -> int:
    import sys

    from vla3d_ros.apps.soak import run_soak

    try:
        result = run_soak(args.minutes, args.out, cameras=args.cameras, rate=args.rate, preset=args.preset,
                          image_size=args.image_size, warmup_s=args.warmup, checkpoint=args.checkpoint)
    except (FileExistsError, ValueError, RuntimeError) as error:
        print(f"vla3d soak: {error}", file=sys.stderr)
        return 2
    print(result.summary())
    print(f"wrote {args.out / 'soak.csv'}, {args.out / 'soak.png'}, {args.out / 'soak.json'}")
    return 0 if result.passed else 1
