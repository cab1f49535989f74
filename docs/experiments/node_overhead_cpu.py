"""Node overhead (`vla3d bench`'s in-process stage, model excluded) by wall clock and by thread CPU time
(issue 18: the target is <= 2 ms p50 for 3 x 640x480 RGB-D, 16UC1 depth).

On a machine another job keeps busy, wall time counts the time the scheduler gave to others; the
stage's CPU time counts only its own work (everything runs on this thread: the sync node's
callbacks are called directly, no DDS), so its p50 is the steadier figure. The run is
`apps.bench_graph.node_overhead` itself, once with its `time.perf_counter` and once with that
clock replaced by `time.thread_time`.

Usage: OMP_NUM_THREADS=1 nice -n 19 python docs/experiments/node_overhead_cpu.py [RUNS=40] > OUT.json
"""
from __future__ import annotations

import json
import sys
import time
import types

import torch

from vla3d_ros.apps import bench_graph


def stage_p50(runs: int) -> dict[str, float]:
    result = bench_graph.node_overhead("cpu", runs=runs, warmup=5)
    return {stage: round(stats["p50"], 3) for stage, stats in result["stages"].items()}


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    torch.set_num_threads(1)
    wall = stage_p50(runs)
    bench_graph.time = types.SimpleNamespace(perf_counter=time.thread_time, time=time.time)
    try:
        cpu = stage_p50(runs)
    finally:
        bench_graph.time = time
    print(json.dumps({"runs": runs, "wall_ms_p50": wall, "thread_cpu_ms_p50": cpu}, indent=1))


if __name__ == "__main__":
    main()
