"""`vla3d inspect`: parameter counts and timings come from the real model."""
from __future__ import annotations

import json

import pytest

from vla3d_ros.cli import main
from vla3d_ros.model.config import preset
from vla3d_ros.model.policy import VLA3DPolicy


def _report(capsys, *args) -> dict:
    assert main(["inspect", "--preset", "tiny", "--json", "--repeats", "1", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_inspect_reports_all_four_3d_components(capsys):
    report = _report(capsys)
    params = report["params"]
    assert set(params) == {"base", "fusion", "instances", "completion", "aggregation"}
    assert all(count > 0 for count in params.values())
    assert params == {k: v for k, v in VLA3DPolicy(preset("tiny")).parameter_counts().items() if k in params}
    addon = params["fusion"] + params["instances"] + params["completion"] + params["aggregation"]
    assert report["addon_ratio"] == pytest.approx(addon / params["base"])
    assert report["ema_teacher_params"] == params["fusion"]        # the teacher is a copy of the fusion
    assert report["forward_ms"] > 0 and report["infer_ms"] > 0 and report["losses"]["loss"] > 0
    assert report["tokens"]["completion"] == preset("tiny").num_completion_points   # proposed at inference


def test_inspect_2d_baseline_and_bad_checkpoint(capsys, tmp_path):
    report = _report(capsys, "--no-3d", "--stage", "1")
    assert report["addon_ratio"] == 0 and report["params"]["fusion"] == 0 and report["stage"] == 1
    assert main(["inspect", "--checkpoint", str(tmp_path / "nothing.pt")]) == 1
    assert "pickle" in capsys.readouterr().err
