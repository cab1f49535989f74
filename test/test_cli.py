"""The `vla3d` console command: lists its subcommands, fails clearly on bad input."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from vla3d_ros.cli import SUBCOMMANDS, main

REQUIRED = {"gen", "convert", "inspect", "train", "eval", "bringup", "replay", "bench", "demo"}


def test_every_subcommand_module_exists_and_is_complete():
    import importlib

    assert REQUIRED <= set(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"vla3d_ros.commands.{name}")
        assert callable(module.add_arguments) and callable(module.run), name


def test_help_lists_every_subcommand():
    vla3d = shutil.which("vla3d", path=str(Path(sys.executable).parent))
    assert vla3d, "the vla3d console script is not installed in the venv"
    result = subprocess.run([vla3d, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in REQUIRED:
        assert name in result.stdout


def test_unknown_subcommand_exits_nonzero_with_one_line(capsys):
    assert main(["fly"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown command 'fly'" in err


def test_bad_argument_exits_nonzero_with_one_line(capsys):
    try:
        main(["inspect", "--no-such-flag"])
    except SystemExit as exit_:
        assert exit_.code == 2
    else:
        raise AssertionError("a bad argument must exit non-zero")
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--no-such-flag" in err
