"""Benchmark building blocks: percentile summaries, target verdicts, the accelerated runner's outputs,
the code version a result was measured with."""
from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest
import torch

from vla3d_ros.bench.fastpath import compare_runners, compile_runner
from vla3d_ros.bench.model_latency import HashInstructionEncoder, build_runner, deploy_observation
from vla3d_ros.bench.op_counts import count_ops_and_flops, inference_counts, training_step_counts
from vla3d_ros.bench.report import _code_lines, verdicts
from vla3d_ros.bench.stats import code_version, summarize
from vla3d_ros.model.config import preset
from vla3d_ros.model.policy import VLA3DPolicy
from vla3d_ros.model.synthetic import synthetic_batch, synthetic_observation


def test_summarize_known_answer_and_order():
    stats = summarize(range(1, 102))                 # 1..101: percentiles fall on integers
    assert (stats["p50"], stats["p90"], stats["p99"]) == (51.0, 91.0, 100.0)
    assert stats["min"] == 1 and stats["max"] == 101 and stats["n"] == 101 and stats["mean"] == 51.0
    rng = np.random.default_rng(0)
    skewed = summarize(rng.lognormal(size=57))
    assert skewed["min"] <= skewed["p50"] <= skewed["p90"] <= skewed["p99"] <= skewed["max"]


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")]])
def test_summarize_refuses_empty_or_non_finite(bad):
    with pytest.raises(ValueError):
        summarize(bad)


def test_verdicts_compare_against_the_bounds():
    results = {"infer_3d_over_2d_ratio": 1.5, "policy_latency_ms_p50": 30.5, "addon_over_base_ratio": 0.1,
               "node_overhead_ms_p50": 2.5, "e2e_p99_over_p50": float("nan"), "sustained_drop_rate": 0.0}
    by_key = {v["key"]: v["met"] for v in verdicts(results)}
    assert by_key == {"infer_3d_over_2d_ratio": True, "policy_latency_ms_p50": False, "node_overhead_ms_p50": False,
                      "e2e_p99_over_p50": False, "sustained_drop_rate": True,
                      "sustained_chunk_age_slope_ms_per_s": False}


def test_hash_encoder_is_deterministic_unit_norm_and_cached():
    encoder = HashInstructionEncoder()
    first = encoder.embed("pick up the cube")
    assert np.isclose(np.linalg.norm(first), 1.0) and first.shape == (384,)
    assert np.array_equal(first, HashInstructionEncoder().embed("pick up the cube"))
    assert not np.allclose(first, encoder.embed("open the drawer"))
    encoder.embed("pick up the cube")
    assert encoder.calls == 2                        # two distinct instructions, one encoder call each


def test_deploy_observation_is_rendered_once_and_every_caller_gets_its_own_copy():
    config = preset("tiny")
    first = deploy_observation(config, (24, 32), seed=5)
    first.rgb[:] = 0                                 # a caller scribbling on its copy changes no other
    first.depth[:] = np.nan
    second = deploy_observation(config, (24, 32), seed=5)
    fresh = synthetic_observation(config.replace(image_size=(24, 32)), seed=5)
    for name in ("rgb", "depth", "intrinsics", "T_base_cam", "joint_positions", "ee_pose"):
        assert np.array_equal(getattr(second, name), getattr(fresh, name), equal_nan=True), name
    assert second.rgb.shape == (config.num_views, 24, 32, 3)
    other_seed = deploy_observation(config, (24, 32), seed=6)
    assert not np.array_equal(other_seed.rgb, second.rgb)


def test_bf16_autocast_runner_matches_fp32_within_bf16_precision():
    torch.set_num_threads(1)
    config = preset("tiny")
    obs = deploy_observation(config, (48, 64))
    reference = build_runner(config, seed=3)
    assert reference.precision == "fp32"
    fast = build_runner(config, seed=3, precision="bf16")      # forced: emulated where bf16 is not native
    result = compare_runners(reference, fast, obs, runs=2, warmup=0)
    actions = fast.infer(obs)["actions"]
    assert actions.dtype == np.float32 and np.all(np.isfinite(actions))
    # bf16 keeps 8 mantissa bits: a few 1e-3 relative error through a few layers, not more
    assert 0.0 < result["max_rel_diff"] < 0.05, result
    identical = compare_runners(reference, build_runner(config, seed=3), obs, runs=1, warmup=0)
    assert identical["max_abs_diff"] == 0.0        # same seed, same input: bit-identical eager runs
    assert math.isfinite(result["latency_ms"]["p50"])
    # the compiled forward runs inside the runner's autocast too ("eager" backend: traced, not
    # compiled): bf16-close to the eager bf16 runner, and as far from fp32 as it is
    compiled_runner = compile_runner(build_runner(config, seed=3, precision="bf16"), backend="eager")
    compiled = compare_runners(fast, compiled_runner, obs, runs=1, warmup=0)
    assert compiled["max_rel_diff"] < 0.05, compiled
    assert compare_runners(reference, compiled_runner, obs, runs=1, warmup=0)["max_rel_diff"] > 1e-4


def test_op_and_flop_counts_are_exact_and_the_3d_policy_costs_more_of_both():
    linear = torch.nn.Linear(16, 8)
    counts = count_ops_and_flops(lambda: linear(torch.ones(4, 16)))
    assert counts["flops"] == 2 * 4 * 16 * 8 and counts["aten_ops"] >= 1
    config = preset("tiny")
    obs = deploy_observation(config, (48, 64))
    full, baseline = build_runner(config, seed=3), build_runner(config.with_3d(False), seed=3)
    first = inference_counts(full, obs)
    assert inference_counts(full, obs) == first                                 # load-independent
    two_d = inference_counts(baseline, obs)
    assert first["flops"] > two_d["flops"] > 0 and first["aten_ops"] > two_d["aten_ops"] > 0
    step = training_step_counts(VLA3DPolicy(config), synthetic_batch(config, 2), stage=1)
    assert step["flops"] > 2 * first["flops"]            # batch 2, and the backward of the forward


def _git(directory, *args):
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", *args], cwd=directory,
                   check=True, capture_output=True)


def test_code_version_names_the_commit_and_the_uncommitted_package_files(tmp_path):
    assert code_version(tmp_path) == {"commit": None, "modified": []}          # not a checkout
    _git(tmp_path, "init", "-q")
    assert code_version(tmp_path) == {"commit": None, "modified": []}          # no commit yet
    package = tmp_path / "vla3d_ros"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    (package / "b.py").write_text("y = 1\n")
    (tmp_path / "notes.md").write_text("n\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "c")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert code_version(tmp_path) == {"commit": head, "modified": []}
    (package / "b.py").write_text("y = 2\n")
    (tmp_path / "notes.md").write_text("changed outside the package\n")
    (package / "new.py").write_text("untracked\n")
    assert code_version(tmp_path) == {"commit": head, "modified": ["vla3d_ros/b.py"]}
    assert _code_lines(code_version(tmp_path)) == [f"- code: commit {head[:12]}, plus uncommitted changes in "
                                                   "`vla3d_ros/b.py`"]
    assert _code_lines(None) == []                     # results recorded before the key existed
