"""`vla3d bench --quick` end to end (real DDS between two processes) into a temporary directory."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from vla3d_ros.model.precision import has_native_bf16

TRAINING_KEYS = ("matmul_peak_gflops_fp32", "matmul_peak_gflops_bf16", "train_samples_per_s_stage1",
                 "train_samples_per_s_stage2", "train_speedup_vs_fp32", "infer_3d_over_2d_ratio")
REQUIRED_KEYS = ("precision", *TRAINING_KEYS, "addon_over_base_ratio", "node_overhead_ms_p50", "e2e_latency_ms_p50", "e2e_latency_ms_p99",
                 "sustained_drop_rate", "peak_rss_mb", "machine", "torch_threads", "parameters", "targets",
                 "model", "node_overhead", "dds", "fast_path")
MACHINE_KEYS = ("cpu_model", "cores", "ram_gb", "torch", "torch_threads", "load_average")


def _stats_dicts(node, path=""):
    """Every latency-statistics dict (one with p50/p90/p99) anywhere in the results."""
    if isinstance(node, dict):
        if {"p50", "p90", "p99"} <= node.keys():
            yield path, node
        for key, value in node.items():
            yield from _stats_dicts(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _stats_dicts(value, f"{path}[{index}]")


def test_quick_bench_writes_every_key_with_sane_values(tmp_path):
    out = tmp_path / "bench"
    command = [sys.executable, "-m", "vla3d_ros.cli", "bench", "--quick", "--preset", "tiny", "--runs", "3",
               "--sustained-seconds", "1", "--out", str(out)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=420, env=dict(os.environ))
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().startswith("# vla3d_ros benchmark")
    assert (out / "bench.png").stat().st_size > 1000
    missing = [key for key in REQUIRED_KEYS if key not in results]
    assert not missing, missing
    assert all(key in results["machine"] for key in MACHINE_KEYS)
    assert results["torch_threads"] == 1 == results["machine"]["torch_threads"]
    for key in ("addon_over_base_ratio", "node_overhead_ms_p50", "e2e_latency_ms_p50", "e2e_latency_ms_p99",
                "peak_rss_mb", *TRAINING_KEYS):
        assert math.isfinite(results[key]) and results[key] > 0, (key, results[key])
    assert 0.0 <= results["sustained_drop_rate"] <= 1.0
    assert results["e2e_latency_ms_p50"] <= results["e2e_latency_ms_p99"]
    stats = list(_stats_dicts(results))
    assert len(stats) > 20
    for path, entry in stats:
        values = [entry[k] for k in ("min", "p50", "p90", "p99", "max") if k in entry]
        assert all(math.isfinite(v) and v >= 0 for v in values), (path, entry)
        assert values == sorted(values), (path, entry)       # min <= p50 <= p90 <= p99 <= max
    model = results["model"]
    assert set(model["modules"]) == {"base_backbone", "fusion", "instances", "completion", "aggregation",
                                     "action_expert"}
    # the ratios are what the times say they are, at the precision the run resolved
    assert math.isclose(results["addon_over_base_ratio"], model["addon"]["p50"] / model["base"]["p50"])
    assert math.isclose(results["infer_3d_over_2d_ratio"], model["total"]["p50"] / model["baseline_2d_total"]["p50"])
    assert results["precision"] == model["precision"] == ("bf16" if has_native_bf16("cpu") else "fp32")
    training = results["training"]
    assert training["precision"] == results["precision"] and training["episodes"]["episodes"] == 1
    assert results["train_samples_per_s_stage1"] == training["episodes"]["stage1"]["samples_per_s"]
    for stage in ("stage1", "stage2"):
        assert training["synthetic"][stage]["flops_per_step"] > 0
        assert 0 < training["synthetic"][stage]["fp32"]["fraction_of_peak"] < 1
    assert model["parameters"]["fusion"] > 0 and model["parameters_2d"]["fusion"] == 0
    fast = results["fast_path"]
    assert fast["instruction_cache"]["encoder_calls_for_runs"] == 1
    assert fast["batched_views"]["outputs_equal"]
    zero_copy = results["node_overhead"]["zero_copy"]
    assert zero_copy["rgb8_decode_is_view"] and zero_copy["depth_32FC1_decode_is_view"]
    e2e = results["dds"]["e2e"]
    assert e2e["answered"] >= 1 and e2e["inference_failures"] == 0
    sustained = results["dds"]["sustained"]
    assert sustained["sets_published"] > 0 and sustained["sets_synchronised"] > 0
    assert sustained["sync_queue_depth_max"] <= 5          # the bench config's queue_size bounds it
    targets = [t["key"] for t in results["targets"]]
    assert targets[:3] == ["infer_3d_over_2d_ratio", "policy_latency_ms_p50", "node_overhead_ms_p50"]
    assert "addon_over_base_ratio" not in targets                   # information, no longer a target
    remote = results["remote"]
    pixels = remote["num_views"] * remote["image_size"][0] * remote["image_size"][1]
    # RGB (3 bytes) + float32 depth (4 bytes) per pixel, plus under 2 KB of K, T, state and keys
    assert pixels * 7 < remote["request_bytes"] < pixels * 7 + 2048
    assert remote["remote_ms"]["n"] == remote["local_ms"]["n"] == 3
    assert remote["transport_ms"]["p50"] <= remote["remote_ms"]["max"]
