"""`vla3d serve --checkpoint C [--host 127.0.0.1] [--port 8000]`: the checkpoint's policy behind a websocket
speaking openpi's client protocol (`vla3d_ros.remote`), for a ROS graph on another computer
(`policy: ws://host:port` in its runtime config) or any `openpi-client` user.

Binds loopback only unless `--allow-remote` is given, and then only with a shared token
(`--token-file`, or $VLA3D_POLICY_TOKEN) that clients send as `Authorization: Api-Key <token>`."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

HELP = "serve a checkpoint's policy over a websocket (openpi's client protocol)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="policy checkpoint directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 = any free port)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a non-loopback --host (requires a token)")
    parser.add_argument("--token-file", type=Path, default=None,
                        help="file holding the shared token clients must send (default: $VLA3D_POLICY_TOKEN)")
    parser.add_argument("--cameras", default="",
                        help="comma-separated camera names in the policy's view order, announced to clients "
                             "(default: views are matched by count)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device (default auto)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (default 1)")


def _token(args: argparse.Namespace) -> str | None:
    from vla3d_ros.remote.client import TOKEN_ENV

    if args.token_file is None:
        return os.environ.get(TOKEN_ENV) or None
    token = args.token_file.read_text().strip()
    if not token:
        raise ValueError(f"token file {args.token_file} is empty")
    return token


def run(args: argparse.Namespace) -> int:
    from vla3d_ros.remote.protocol import server_metadata
    from vla3d_ros.remote.server import PolicyServer, check_exposure

    def fail(message: str) -> int:
        print(f"vla3d serve: error: {message}", file=sys.stderr)
        return 2

    if not 0 <= args.port <= 65535:
        return fail(f"--port must be in [0, 65535], got {args.port}")
    if args.torch_threads < 1:
        return fail(f"--torch-threads must be >= 1, got {args.torch_threads}")
    try:
        token = _token(args)
        check_exposure(args.host, args.allow_remote, token)
    except (OSError, ValueError) as error:
        return fail(str(error))
    import torch

    from vla3d_ros.runtime.policy_source import load_checkpoint_policy, resolve_device

    torch.set_num_threads(args.torch_threads)
    try:
        loaded = load_checkpoint_policy(args.checkpoint, resolve_device(args.device))
    except Exception as error:  # noqa: BLE001 - any load fault is one line, not a traceback
        return fail(f"cannot load checkpoint {args.checkpoint!r}: {type(error).__name__}: {error}")
    config = loaded.policy.config
    cameras = tuple(name for name in args.cameras.split(",") if name)
    if cameras and len(cameras) != config.num_views:
        return fail(f"--cameras names {len(cameras)} cameras, the policy takes {config.num_views}")
    loaded.policy.infer(loaded.warmup_observation)   # one-time costs before the first client waits on them
    metadata = server_metadata(num_views=config.num_views, image_size=config.image_size, state_dim=config.state_dim,
                               action_names=loaded.dimension_names, step_period=loaded.step_period,
                               horizon=config.horizon, camera_names=cameras)
    server = PolicyServer(loaded.policy, metadata, host=args.host, port=args.port, token=token,
                          allow_remote=args.allow_remote)
    try:
        port = server.start()
    except OSError as error:
        return fail(f"cannot listen on {args.host}:{args.port}: {error}")
    print(f"vla3d serve: serving {args.checkpoint} on ws://{args.host}:{port}"
          f"{' (token required)' if token else ''}", flush=True)
    # Clients connecting, leaving and refused (a wrong token) go to stderr.
    logging.basicConfig(level=logging.INFO, format="vla3d serve: %(message)s")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.shutdown()
    return 0
