"""docs/experiments/generalisation_table.py: one table per task, run seeds pooled per task and suite,
each task's gap measured against its own nominal."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "experiments" / "generalisation_table.py"


def _table_module():
    spec = importlib.util.spec_from_file_location("generalisation_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(path: Path, suite: str, run_seed: int, per_task: dict[str, tuple[int, int]],
            checkpoint: str = "runs/two/final") -> str:
    rates = {task: {"successes": s, "trials": n} for task, (s, n) in per_task.items()}
    path.write_text(json.dumps({"checkpoint": checkpoint, "split": "val", "run_seed": run_seed, "suite": suite,
                                "per_task": rates}))
    return str(path)


def test_each_task_gets_its_own_pooled_table(tmp_path, capsys):
    paths = [_result(tmp_path / "n0.json", "nominal", 0, {"push_to_zone": (45, 50), "pick_place_bowl": (30, 50)}),
             _result(tmp_path / "n1.json", "nominal", 1, {"push_to_zone": (47, 50), "pick_place_bowl": (34, 50)}),
             _result(tmp_path / "l0.json", "language", 0, {"push_to_zone": (40, 51), "pick_place_bowl": (20, 51)}),
             _result(tmp_path / "p0.json", "language", 1, {"push_to_zone": (30, 51)})]   # one task only
    assert _table_module().main(paths) == 0
    out = capsys.readouterr().out
    pick, push = out.split("| pick_place_bowl |")[1].split("| push_to_zone |")
    assert "| nominal | 64 % |" in pick and "64/100" in pick         # 30 + 34 of 100, seeds pooled
    assert "| language | 39 % |" in pick and "20/51" in pick and "| -25 |" in pick   # vs pick's own nominal
    assert "| nominal | 92 % |" in push and "92/100" in push
    assert "70/102" in push and "| -23 |" in push
    assert "run seed(s) 0, 1" in out


def test_different_checkpoints_are_not_pooled(tmp_path, capsys):
    paths = [_result(tmp_path / "a.json", "nominal", 0, {"push_to_zone": (1, 2)}),
             _result(tmp_path / "b.json", "nominal", 0, {"push_to_zone": (1, 2)}, checkpoint="other")]
    assert _table_module().main(paths) == 1
    assert "refusing to pool different checkpoints" in capsys.readouterr().err
