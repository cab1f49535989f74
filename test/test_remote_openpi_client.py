"""`openpi-client` (PyPI, pinned in requirements-openpi.txt, in its own venv `.venv-openpi` since it pins
numpy<2) calls `vla3d serve` running in another process on loopback and gets an action chunk; and the
`vla3d serve` command line refuses what it must refuse with one line."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ros_graph_fixtures import save_tiny_checkpoint
from remote_fixtures import start_server
from vla3d_ros.cli import main

ROOT = Path(__file__).resolve().parents[1]
OPENPI_PYTHON = ROOT / ".venv-openpi" / "bin" / "python"

# Runs in .venv-openpi: only openpi_client, numpy 1.x and the standard library.
CLIENT = r"""
import json, sys
import numpy as np
from openpi_client import websocket_client_policy

url, token = sys.argv[1], sys.argv[2]
try:
    websocket_client_policy.WebsocketClientPolicy(host=url)
    refused = None
except Exception as error:          # no api_key: the server must refuse the handshake
    refused = f"{type(error).__name__}: {error}"
policy = websocket_client_policy.WebsocketClientPolicy(host=url, api_key=token)
meta = policy.get_server_metadata()
views, (height, width), joints = meta["num_views"], meta["image_size"], meta["state_dim"] - 8
K = np.array([[30.0, 0, (width - 1) / 2], [0, 30.0, (height - 1) / 2], [0, 0, 1]])
T = np.eye(4)
T[2, 3] = 1.0
obs = {"images": np.full((views, height, width, 3), 120, np.uint8),
       "depth": np.ones((views, height, width), np.float32),
       "intrinsics": np.stack([K] * views), "T_base_cam": np.stack([T] * views),
       "joint_positions": np.zeros(joints, np.float32), "ee_pose": np.array([0.4, 0, 0.3, 0, 0, 0, 1], np.float32),
       "gripper": 1.0, "prompt": "push the red can into the zone"}
out = policy.infer(obs)
try:
    policy.infer({"prompt": "no images"})
    error = None
except RuntimeError as raised:      # openpi's client raises on the server's text frame
    error = str(raised)
print(json.dumps({"numpy": np.__version__, "metadata": meta, "refused": refused, "error": error,
                  "shape": list(out["actions"].shape), "dtype": str(out["actions"].dtype),
                  "finite": bool(np.all(np.isfinite(out["actions"]))), "keys": sorted(out),
                  "instances": sorted(out["instances"]), "infer_ms": out["server_timing"]["infer_ms"]}))
"""


@pytest.fixture(scope="module")
def served_checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("openpi_ckpt") / "tiny")


def test_openpi_client_gets_a_chunk_from_vla3d_serve(served_checkpoint):
    assert OPENPI_PYTHON.exists(), f"{OPENPI_PYTHON} is missing: `./run setup` creates it (requirements-openpi.txt)"
    token = "test-token-7f3a"
    server = start_server(served_checkpoint, VLA3D_POLICY_TOKEN=token)
    try:
        assert server.url.startswith("ws://127.0.0.1:")
        run = subprocess.run([str(OPENPI_PYTHON), "-c", CLIENT, server.url, token], capture_output=True, text=True,
                             timeout=120, env={"PATH": "/usr/bin:/bin"})
        server_log = server.read_log()
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["numpy"].startswith("1."), "the client must run with openpi-client's own numpy<2"
    meta = result["metadata"]
    assert meta["server"] == "vla3d" and meta["num_views"] == 2 and meta["horizon"] == 4
    assert result["shape"] == [meta["horizon"], meta["action_dim"]] and result["dtype"] == "float32"
    assert result["finite"] and result["infer_ms"] > 0
    assert {"actions", "instances", "completed_points", "timing_ms", "server_timing"} <= set(result["keys"])
    assert "centroids" in result["instances"]
    assert "401" in result["refused"] and "missing or wrong token" in server_log
    assert "observation lacks" in result["error"] and "'images'" in result["error"]


@pytest.mark.parametrize("args, text", [
    (["--host", "0.0.0.0"], "would expose the policy beyond this machine; pass --allow-remote"),
    (["--host", "0.0.0.0", "--allow-remote"], "needs a shared token"),
    (["--port", "70000"], "--port must be in [0, 65535], got 70000"),
    (["--checkpoint", "/nonexistent/ckpt"], "cannot load checkpoint '/nonexistent/ckpt'"),
])
def test_serve_refuses_with_one_line(args, text, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("VLA3D_POLICY_TOKEN", raising=False)
    base = ["serve", "--checkpoint", str(tmp_path)] if "--checkpoint" not in args else ["serve"]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("vla3d serve: error: ") and text in err and err.count("\n") == 1, err


def test_serve_refuses_an_empty_token_file(capsys, monkeypatch, tmp_path):
    (tmp_path / "token").write_text("\n")
    assert main(["serve", "--checkpoint", str(tmp_path), "--token-file", str(tmp_path / "token")]) == 2
    assert "token file" in capsys.readouterr().err
