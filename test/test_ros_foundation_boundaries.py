"""Architecture boundaries: a ROS-free core, nothing importing from the ROS layer, and the
applications (`apps/`) imported only by the entry points above them."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vla3d_ros"
ROS_LAYER = PACKAGE / "ros"
# Applications built on the ROS graph (demo, soak, replay, bench harness): above ros/, below commands/.
APPS_LAYER = PACKAGE / "apps"
# The top layer: subcommands wire everything together, including the ROS graph.
ENTRY_POINTS = {PACKAGE / "cli.py", PACKAGE / "commands"}
ROS_MODULE_PREFIXES = ("rclpy", "launch", "launch_ros", "tf2_ros", "message_filters", "cv_bridge",
                       "rosbag2_py", "ament_index_python")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def is_ros_module(name: str) -> bool:
    top = name.split(".")[0]
    return top in ROS_MODULE_PREFIXES or top.endswith(("_msgs", "_srvs", "_interfaces")) \
        or name.startswith("vla3d_ros.msg") or name.startswith("vla3d_ros.ros")


def core_files() -> list[Path]:
    files = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ROS_LAYER in path.parents or APPS_LAYER in path.parents or path in ENTRY_POINTS or any(e in path.parents for e in ENTRY_POINTS):
            continue
        files.append(path)
    return files


def test_core_never_imports_ros_or_the_ros_layer():
    offenders = {
        str(path.relative_to(PACKAGE.parent)): sorted(n for n in imported_modules(path) if is_ros_module(n))
        for path in core_files()
    }
    offenders = {path: names for path, names in offenders.items() if names}
    assert not offenders, f"the ROS-free core imports ROS: {offenders}"


def is_apps_module(name: str) -> bool:
    return name == "vla3d_ros.apps" or name.startswith("vla3d_ros.apps.")


def test_neither_the_core_nor_the_ros_layer_imports_the_applications():
    below_apps = core_files() + sorted(ROS_LAYER.rglob("*.py"))
    offenders = {
        str(path.relative_to(PACKAGE.parent)): sorted(n for n in imported_modules(path) if is_apps_module(n))
        for path in below_apps
    }
    offenders = {path: names for path, names in offenders.items() if names}
    assert not offenders, f"modules below apps/ import it: {offenders}"


def test_apps_check_catches_an_apps_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from vla3d_ros.apps.soak import run_soak\nimport vla3d_ros.apps\nimport vla3d_ros.approx\n")
    assert sorted(n for n in imported_modules(sample) if is_apps_module(n)) == ["vla3d_ros.apps", "vla3d_ros.apps.soak"]


def test_boundary_check_catches_a_ros_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import numpy\nfrom sensor_msgs.msg import Image\nfrom rclpy.node import Node\n")
    assert sorted(n for n in imported_modules(sample) if is_ros_module(n)) == ["rclpy.node", "sensor_msgs.msg"]


def test_importing_the_core_loads_no_ros_module():
    packages = sorted({
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for path in core_files()
    })
    script = (
        "import importlib, sys\n"
        f"for name in {packages!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rpyutils') or m.endswith('_msgs'))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "", f"core import pulled in ROS modules: {result.stdout.strip()}"
