"""One name per concept: no import aliases that rename a thing, no class name defined twice."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vla3d_ros"
# The only renames allowed: module aliases every reader of numeric Python knows.
WELL_KNOWN_ALIASES = {
    ("numpy", "np"),
    ("torch.nn.functional", "F"),
    ("torch.distributed", "dist"),
    ("matplotlib.pyplot", "plt"),
    ("open3d", "o3d"),
}


def renaming_imports(source: str) -> list[str]:
    """`import X as Y` / `from M import A as B` (B != A) that are not well-known module aliases."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name} as {a.asname}" for a in node.names
                      if a.asname and (a.name, a.asname) not in WELL_KNOWN_ALIASES]
        elif isinstance(node, ast.ImportFrom):
            found += [f"line {node.lineno}: from {node.module} import {a.name} as {a.asname}" for a in node.names
                      if a.asname and a.asname != a.name
                      and (f"{node.module}.{a.name}", a.asname) not in WELL_KNOWN_ALIASES]
    return found


def class_definitions(sources: dict[str, str]) -> dict[str, list[str]]:
    """class name -> "path:line" of every definition."""
    where = defaultdict(list)
    for path, source in sources.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                where[node.name].append(f"{path}:{node.lineno}")
    return dict(where)


def package_sources() -> dict[str, str]:
    return {str(path.relative_to(PACKAGE.parent)): path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}


def test_no_import_renames_a_name():
    offenders = {path: found for path, source in package_sources().items() if (found := renaming_imports(source))}
    assert not offenders, f"import aliases (one name per concept; qualify with the module instead): {offenders}"


def test_no_class_name_is_defined_twice():
    twice = {name: places for name, places in class_definitions(package_sources()).items() if len(places) > 1}
    assert not twice, f"class names defined more than once: {twice}"


def test_the_checks_catch_renames_and_repeated_classes():
    source = ("import numpy as np\nimport torch.nn.functional as F\nimport yaml as y\n"
              "from vla3d_ros.msg import ActionChunk as ActionChunkMsg\nfrom torch.nn import functional as F\n"
              "from vla3d_ros.ros import conversions as conversions\nimport vla3d_ros.msg\n")
    assert renaming_imports(source) == ["line 3: import yaml as y",
                                        "line 4: from vla3d_ros.msg import ActionChunk as ActionChunkMsg"]
    definitions = class_definitions({"a.py": "class Runner:\n    pass\n", "b.py": "class Other:\n    class Runner:\n        pass\n"})
    assert definitions == {"Runner": ["a.py:1", "b.py:2"], "Other": ["b.py:1"]}
