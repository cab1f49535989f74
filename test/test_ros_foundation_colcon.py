"""The repository builds as a ROS 2 package with colcon, and its install space works."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
NOT_SOURCES = shutil.ignore_patterns(".venv", "build", "install", "log", ".git", "__pycache__",
                                     ".pytest_cache", "scratch", "data", "*.egg-info")


def test_colcon_build_and_import_from_install_space(tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(ROOT, workspace / "src" / "vla3d_ros", ignore=NOT_SOURCES)
    venv = VENV_BIN.parent
    env = dict(os.environ, AMENT_PREFIX_PATH=str(venv), CMAKE_PREFIX_PATH=str(venv),
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    build = subprocess.run(
        [str(VENV_BIN / "colcon"), "build", "--event-handlers", "console_direct-",
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, (build.stdout + build.stderr)[-4000:]

    install = workspace / "install"
    probe = (
        "import vla3d_ros, vla3d_ros.msg, vla3d_ros.types\n"
        "from vla3d_ros.msg import ActionChunk, Instance3D, Instance3DArray\n"
        "from rclpy.serialization import serialize_message, deserialize_message\n"
        "m = ActionChunk(rows=1, cols=2, data=[1.0, 2.0])\n"
        "assert deserialize_message(serialize_message(m), ActionChunk).data.tolist() == [1.0, 2.0]\n"
        "print(vla3d_ros.__path__[0]); print(vla3d_ros.msg.__file__)\n"
    )
    run = subprocess.run(
        ["bash", "-c", f'source "{install}/setup.bash" && "{sys.executable}" -c "$PROBE" '
                       f'&& command -v vla3d && vla3d --help'],
        cwd=tmp_path, env=dict(env, PROBE=probe), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    package_dir, msg_file, vla3d_script = run.stdout.splitlines()[:3]
    for installed in (package_dir, msg_file, vla3d_script):
        assert installed.startswith(str(install)), installed
    assert "bringup" in run.stdout
    prefix = install / "vla3d_ros"
    for node in ("inference_node", "action_node", "markers_node"):
        assert os.access(prefix / "lib" / "vla3d_ros" / node, os.X_OK), node
    assert (prefix / "share" / "vla3d_ros" / "package.xml").exists()
