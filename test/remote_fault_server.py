"""`vla3d serve` whose answers a test can spoil, for test_fault_remote_policy.py (run as a child process:
`python -m remote_fault_server <vla3d serve args>`). Before each answer it reads the fault mode from the
file $VLA3D_FAULT_MODE_FILE: "" healthy, "slow" (answers after SLOW_S), "malformed" (a reply that is
not msgpack), "oversized" (a reply past the client's cap)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import vla3d_ros.remote.server
from vla3d_ros.cli import main
from vla3d_ros.remote.protocol import MAX_REPLY_BYTES
from vla3d_ros.remote.server import PolicyServer

MODE_FILE_ENV = "VLA3D_FAULT_MODE_FILE"
SLOW_S = 0.8


class FaultModeServer(PolicyServer):
    def answer(self, data):
        mode = Path(os.environ[MODE_FILE_ENV]).read_text().strip()
        if mode == "slow":
            time.sleep(SLOW_S)   # the fault itself (an overloaded GPU, a congested link)
        reply = super().answer(data)
        if mode == "malformed":
            return b"\xc1" + reply[1:]   # 0xc1 is never used by msgpack
        if mode == "oversized":
            return reply + bytes(MAX_REPLY_BYTES)
        return reply


if __name__ == "__main__":
    vla3d_ros.remote.server.PolicyServer = FaultModeServer
    sys.exit(main(["serve", *sys.argv[1:]]))
