"""What serving the policy over a websocket adds: `RemotePolicy.infer` against `vla3d serve` in a child
process on loopback, interleaved with the same checkpoint's `NumpyPolicy.infer` in this process.

Both paths run the same observation (the preset's camera count, RGB-D, at its deploy resolution:
3 x 128 x 128 for `cpu`; or at a camera resolution the policy resizes from, e.g. 640x480) through
the same weights and the real sentence encoder (cached after the first instruction), so
`remote - local` is what the remote path adds, reported per percentile (paired differences of two
noisy timings can be negative). The server's own policy time (its `timing_ms.total`) is reported
too: remote minus it is the transport (packing, the loopback round trip, unpacking and checking
on both sides). Pairs are interleaved so the load of a shared machine hits both paths alike; the
server and this process compete for the same cores, as a robot PC and a workstation would not.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vla3d_ros.bench.model_latency import deploy_observation
from vla3d_ros.bench.stats import summarize
from vla3d_ros.model.checkpoint import save_checkpoint
from vla3d_ros.model.config import preset
from vla3d_ros.model.policy import VLA3DPolicy
from vla3d_ros.remote.client import RemotePolicy
from vla3d_ros.remote.protocol import observation_to_wire, packb, reply_to_wire
from vla3d_ros.remote.server import ServerProcess
from vla3d_ros.runtime.policy_source import load_checkpoint_policy

# Observation.state = joints (7 here) + ee pose (7) + gripper (1).
_JOINTS = 7


def remote_overhead(preset_name: str, runs: int, warmup: int, seed: int = 0, server_threads: int = 1,
                    camera_hw: tuple[int, int] | None = None) -> dict:
    """{"remote_ms", "local_ms", "server_policy_ms", "transport_ms"} latency summaries, "added_ms_p50"
    and "added_ms_p99" (remote minus local percentile), "request_bytes", "reply_bytes", and what was
    measured."""
    torch.manual_seed(seed)
    config = dataclasses.replace(preset(preset_name), state_dim=_JOINTS + 8)
    with tempfile.TemporaryDirectory(prefix="vla3d_remote_bench_") as directory:
        checkpoint = save_checkpoint(Path(directory) / "ckpt", VLA3DPolicy(config), step_period=0.1)
        server = ServerProcess(["--checkpoint", str(checkpoint), "--port", "0", "--device", "cpu",
                                "--torch-threads", str(server_threads)])
        try:
            local = load_checkpoint_policy(str(checkpoint), "cpu").policy
            remote = RemotePolicy(server.url, lambda metadata: [], reply_timeout=60.0, connect_timeout=30.0)
            remote.connect()
            obs = deploy_observation(config, camera_hw or config.image_size, seed)
            samples: dict[str, list[float]] = {"remote": [], "local": [], "server": []}
            for index in range(warmup + runs):
                start = time.perf_counter()
                output = local.infer(obs)
                local_ms = 1000.0 * (time.perf_counter() - start)
                start = time.perf_counter()
                answer = remote.infer(obs)
                remote_ms = 1000.0 * (time.perf_counter() - start)
                if index >= warmup:
                    samples["local"].append(local_ms)
                    samples["remote"].append(remote_ms)
                    samples["server"].append(answer["timing_ms"]["total"])
            remote.close()
        finally:
            server.stop()
    remote_ms, local_ms = summarize(samples["remote"]), summarize(samples["local"])
    return {
        "preset": preset_name, "runs": runs, "warmup": warmup, "num_views": config.num_views,
        "image_size": list(obs.rgb.shape[1:3]), "depth": True, "server": "vla3d serve, child process, 127.0.0.1",
        "remote_ms": remote_ms, "local_ms": local_ms,
        "added_ms_p50": remote_ms["p50"] - local_ms["p50"], "added_ms_p99": remote_ms["p99"] - local_ms["p99"],
        "server_policy_ms": summarize(samples["server"]),
        "transport_ms": summarize(np.subtract(samples["remote"], samples["server"])),
        "request_bytes": len(packb(observation_to_wire(obs))),
        "reply_bytes": len(packb(reply_to_wire(output, 0.0))),
    }
