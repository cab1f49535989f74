"""Offline action error (episodes and bags agree, batching does not matter, normalised = metric / std)
and the results report (markdown cells, bar plot) built from eval JSONs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train_fixtures import fake_embed, write_synthetic_episodes
from vla3d_ros.data.bags import episodes_to_bags
from vla3d_ros.evaluate.offline import action_error, offline_evaluation
from vla3d_ros.evaluate.report import (bar_plot, load_results, markdown_report, perturbation_table,
                                       records_by, suite_table)
from vla3d_ros.model.checkpoint import save_checkpoint
from vla3d_ros.model.config import preset
from vla3d_ros.model.normalization import NormalizationStats
from vla3d_ros.model.policy import VLA3DPolicy


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline")
    episodes = write_synthetic_episodes(root / "episodes", num_episodes=2, num_steps=5)
    torch.manual_seed(0)
    stats = NormalizationStats(np.zeros(15), np.ones(15), np.full(7, 0.5), np.array([1, 2, 3, 4, 5, 6, 0.5]))
    policy = VLA3DPolicy(preset("tiny").with_3d(False), stats)   # 2D baseline: no label cache needed
    checkpoint = save_checkpoint(root / "ckpt", policy, step_period=0.1)
    return root, episodes, policy, checkpoint


def test_normalised_error_is_metric_error_over_std_and_batching_is_irrelevant(setup):
    root, _, policy, _ = setup
    whole = action_error(policy, root / "episodes", embed=fake_embed, encoder_name="fake", batch_size=10)
    single = action_error(policy, root / "episodes", embed=fake_embed, encoder_name="fake", batch_size=1)
    assert whole["samples"] == 10 and whole["rows"] == 2 * (4 + 4 + 3 + 2 + 1)   # H = 4: padded rows excluded
    std = policy.normalizer.action_std.numpy()
    for index, name in enumerate(whole["action_names"]):
        assert whole["l1_metric"][name] == pytest.approx(single["l1_metric"][name], rel=1e-5)
        assert whole["l1_normalised"][name] == pytest.approx(whole["l1_metric"][name] / float(std[index]), rel=1e-9)
        assert whole["l1_metric"][name] > 0
    assert whole["l1_normalised_mean"] == pytest.approx(np.mean(list(whole["l1_normalised"].values())))


def test_bf16_forward_errors_stay_within_bf16_rounding_of_fp32(setup):
    root, _, policy, _ = setup
    common = dict(embed=fake_embed, encoder_name="fake", batch_size=10)
    full = action_error(policy, root / "episodes", precision="fp32", **common)
    half = action_error(policy, root / "episodes", precision="bf16", **common)   # forced, native or not
    assert (full["precision"], half["precision"]) == ("fp32", "bf16")
    differences = [abs(half["l1_metric"][name] - value) for name, value in full["l1_metric"].items()]
    assert 0.0 < max(differences)                   # the autocast took effect
    for name, value in full["l1_metric"].items():   # 8 mantissa bits: ~1e-2 relative at most
        assert half["l1_metric"][name] == pytest.approx(value, rel=0.05), name


def test_bags_and_episodes_give_the_same_errors(setup, tmp_path):
    root, episodes, _, checkpoint = setup
    from_episodes = offline_evaluation(checkpoint, root / "episodes", embed=fake_embed, encoder_name="fake")
    episodes_to_bags(episodes, tmp_path / "bags", rgb_format="png")
    from_bags = offline_evaluation(checkpoint, tmp_path / "bags", embed=fake_embed, encoder_name="fake")
    assert from_bags["samples"] == from_episodes["samples"]
    for name, value in from_episodes["l1_metric"].items():
        assert from_bags["l1_metric"][name] == pytest.approx(value, rel=1e-6, abs=1e-7)
    with pytest.raises(ValueError, match="neither episodes nor ROS 2 bags"):
        offline_evaluation(checkpoint, tmp_path, embed=fake_embed, encoder_name="fake")


def _result(label, suite, successes, trials):
    record = {"successes": successes, "trials": trials}
    return {"label": label, "suite": suite, "overall": record, "per_task": {"stack_cubes": record},
            "per_perturbation": {suite: record}, "command": f"vla3d eval --label {label} --suite {suite}"}


def test_report_tables_and_plot(tmp_path):
    results = [_result("2D baseline", "nominal", 31, 50), _result("3D", "nominal", 40, 50),
               _result("3D", "camera", 0, 50)]
    for index, result in enumerate(results):
        (tmp_path / f"r{index}.json").write_text(json.dumps(result))
    loaded = load_results(sorted(tmp_path.glob("r*.json")))
    table = suite_table(loaded).splitlines()
    assert table[0] == "| policy | nominal | camera |"
    assert table[2] == "| 2D baseline | 62.0 [48.2, 74.1] (31/50) | – |"     # Wilson 95 % of 31/50
    assert table[3] == "| 3D | 80.0 [67.0, 88.8] (40/50) | 0.0 [0.0, 7.1] (0/50) |"
    report = markdown_report(loaded)
    assert "## Per task" in report and "vla3d eval --label 3D --suite camera" in report
    png = bar_plot(loaded, tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "bad.json").write_text(json.dumps({"suite": "x"}))
    with pytest.raises(ValueError, match="key 'label' missing"):
        load_results([tmp_path / "bad.json"])


def test_sweep_reports_one_row_and_one_bar_group_per_perturbation_cell(tmp_path):
    """A `--suite all` file holds many cells: `--by perturbation` lays them out as rows/bars."""
    def sweep(label, counts):
        cells = {cell: {"successes": k, "trials": 10} for cell, k in counts.items()}
        total = {"successes": sum(counts.values()), "trials": 10 * len(counts)}
        return {"label": label, "suite": "all", "overall": total, "per_task": {"push_to_zone": total},
                "per_perturbation": cells}
    results = [sweep("2d", {"nominal": 3, "light:1": 2}), sweep("3d", {"nominal": 5, "occlusion:1": 4})]
    records = records_by(results, "perturbation")
    assert records[("3d", "occlusion:1")]["successes"] == 4 and ("2d", "occlusion:1") not in records
    assert records_by(results, "suite")[("2d", "all")]["successes"] == 5
    table = perturbation_table(results).splitlines()
    assert table[0] == "| perturbation | 2d | 3d |"
    assert table[2].startswith("| nominal | 30.0 ") and "(5/10)" in table[2]
    assert table[3].startswith("| light:1 | 20.0 ") and table[3].endswith("| – |")
    assert table[4].startswith("| occlusion:1 | – | 40.0 ")
    assert "| perturbation | 2d | 3d |" in markdown_report(results, by="perturbation")
    assert bar_plot(results, tmp_path / "sweep.png", by="perturbation").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="by must be one of .*'cell'"):
        records_by(results, "cell")
