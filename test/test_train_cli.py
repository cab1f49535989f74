"""`vla3d train` / `vla3d eval` argument handling: bad input fails with a clear one-line reason."""
from __future__ import annotations

import pytest

from train_fixtures import write_synthetic_episodes
from vla3d_ros.cli import main


def test_unknown_component_is_rejected_by_the_parser(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--disable", "fusion,wings"])
    assert exit_info.value.code == 2
    assert "unknown component(s) ['wings']" in capsys.readouterr().err


def test_inconsistent_ablation_names_the_dependency(capsys, tmp_path):
    write_synthetic_episodes(tmp_path / "data", num_episodes=1, num_steps=3)
    code = main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--preset", "tiny",
                 "--disable", "instances", "--no-progress"])
    assert code == 1
    assert "needs instances.enabled=True" in capsys.readouterr().err


def test_resume_without_a_run_and_offline_without_data_fail_cleanly(capsys, tmp_path):
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "none"), "--resume", "--no-progress"]) == 1
    assert "holds no run" in capsys.readouterr().err
    assert main(["eval", "--offline", "--checkpoint", str(tmp_path), "--json", str(tmp_path / "x.json")]) == 1
    assert "--offline needs --data" in capsys.readouterr().err
