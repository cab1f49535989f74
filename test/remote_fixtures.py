"""`vla3d serve` in a child process for the remote policy tests (test_fault_remote_policy.py,
test_remote_openpi_client.py): the same interpreter, this checkout and the test helpers importable."""
from __future__ import annotations

import os
from pathlib import Path

from vla3d_ros.remote.server import ServerProcess

TEST_DIR = Path(__file__).resolve().parent
CHILD_ENV = {"PYTHONPATH": os.pathsep.join(filter(None, (str(TEST_DIR), str(TEST_DIR.parent),
                                                         os.environ.get("PYTHONPATH"))))}
SERVER_START_S = 120.0   # a child process loading torch and the policy on a loaded 2-core machine


def serve_args(checkpoint: Path, port: int = 0) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--port", str(port), "--device", "cpu"]


def start_server(checkpoint: Path, port: int = 0, **env: str) -> ServerProcess:
    return ServerProcess(serve_args(checkpoint, port), timeout=SERVER_START_S, env={**CHILD_ENV, **env})
