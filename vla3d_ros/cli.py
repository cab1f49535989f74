"""`vla3d`: one entry point, one subcommand per job.

Each subcommand lives in `vla3d_ros/commands/<name>.py` and defines `add_arguments(parser)` and
`run(args) -> int`; its one-line help is in `SUBCOMMANDS` below. Modules are imported only when
their subcommand runs, so `vla3d --help` stays fast and a broken optional dependency only breaks
its own command.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS: dict[str, str] = {
    "gen": "generate simulated demonstrations (MuJoCo) into an episode directory",
    "convert": "convert ROS 2 bags (MCAP or sqlite3, any robot's with --config) <-> episodes",
    "inspect": "print a policy's parameter counts and run a forward pass",
    "train": "train a policy (stage 1 / stage 2) on episodes",
    "eval": "evaluate a checkpoint in closed loop (sim) or offline (episodes, bags)",
    "bringup": "run the ROS 2 node graph in-process from a config file",
    "replay": "replay a bag through the live graph and record its outputs",
    "bench": "run the benchmark harness (writes bench/results.json and .md)",
    "demo": "the main job: sim + ROS 2 graph + policy, end to end",
    "soak": "run the full graph under sustained camera load and record resource use",
    "serve": "serve a checkpoint's policy over a websocket (openpi's client protocol)",
    "calibrate": "calibrate cameras with a ChArUco board: intrinsics, hand-eye extrinsics, live collection",
}


class _OneLineErrorParser(argparse.ArgumentParser):
    """Bad arguments exit 2 with a one-line reason (argparse prints usage by default)."""

    def error(self, message: str) -> None:  # noqa: D102 - argparse API
        self.exit(2, f"vla3d: error: {message}\n")


def _load(name: str):
    return importlib.import_module(f"vla3d_ros.commands.{name}")


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the selected subcommand's module is imported to add its arguments."""
    parser = _OneLineErrorParser(prog="vla3d", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineErrorParser)
    for name, help_text in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            _load(name).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((arg for arg in argv if not arg.startswith("-")), None)
    if selected is not None and selected not in SUBCOMMANDS:
        print(f"vla3d: error: unknown command {selected!r} (choose from {', '.join(SUBCOMMANDS)})",
              file=sys.stderr)
        return 2
    args = build_parser(selected).parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 0
    try:
        return int(_load(args.command).run(args) or 0)
    except KeyboardInterrupt:
        print("vla3d: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
