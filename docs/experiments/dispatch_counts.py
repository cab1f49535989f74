"""Dispatched aten ops per forward of the shipped checkpoint, per component, and the 3D / 2D time ratio
(issue 18: inference is dispatch-bound, many small ops in the 3D components).

- op counts: one `VLA3DPolicy.predict` of the shipped checkpoint (fp32, `inference_mode`) on the fixed
  synthetic observation at its resolution (3 views, 128x128), ops attributed to the component whose
  code dispatched them (vision, trunk, fusion, instances, completion = proposal + predictor,
  aggregation, action_head; "other" = the policy's own glue); the 2D baseline
  (`config.with_3d(False)`, seeded random weights: op counts do not depend on weight values) alike.
- time ratio: `predict` of the 3D policy and of the 2D baseline called alternately in one process
  (machine load hits both alike), median wall / minimum wall / median thread-CPU ms of RUNS each, and the same for `NumpyPolicy.infer` on a
  3 x 640x480 RGB-D observation (preprocessing included, what the inference node runs).

Usage: OMP_NUM_THREADS=1 nice -n 19 python docs/experiments/dispatch_counts.py [RUNS=30] > OUT.json
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vla3d_ros.bench.model_latency import HashInstructionEncoder, deploy_observation
from vla3d_ros.model import policy as policy_module
from vla3d_ros.model.checkpoint import load_checkpoint
from vla3d_ros.model.policy import NumpyPolicy, VLA3DPolicy
from vla3d_ros.model.synthetic import synthetic_observation

CHECKPOINT = Path(__file__).resolve().parents[2] / "vla3d_ros" / "assets" / "checkpoints" / "default"
COMPONENTS = ("vision", "trunk", "fusion", "instances", "completion", "aggregation", "action_head")


class RegionOpCounter(TorchDispatchMode):
    """Counts aten ops per region; `region(name)` marks the code that dispatches them."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}
        self.stack = ["other"]

    @contextmanager
    def region(self, name: str):
        self.stack.append(name)
        try:
            yield
        finally:
            self.stack.pop()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[self.stack[-1]] = self.counts.get(self.stack[-1], 0) + 1
        return func(*args, **(kwargs or {}))


def _wrapped(counter: RegionOpCounter, name: str, function):
    def call(*args, **kwargs):
        with counter.region(name):
            return function(*args, **kwargs)
    return call


def op_counts(runner: NumpyPolicy, obs) -> dict[str, int]:
    """aten ops of one `predict` per component (module docstring)."""
    policy = runner.policy
    counter = RegionOpCounter()
    patched = []
    for name in COMPONENTS:
        module = getattr(policy, name, None)
        if module is None:
            continue
        for method in ("forward", "select", "complete", "predict"):
            if hasattr(module, method):
                patched.append((module, method))
                setattr(module, method, _wrapped(counter, name, getattr(module, method)))
    proposal = policy_module.propose_completion_points
    policy_module.propose_completion_points = _wrapped(counter, "completion", proposal)
    try:
        with torch.inference_mode():
            batch = runner.batch_from_observation(obs)
            with counter:
                policy.predict(batch, generator=runner.generator)
    finally:
        policy_module.propose_completion_points = proposal
        for module, method in patched:
            delattr(module, method)
    counts = dict(sorted(counter.counts.items()))
    counts["total"] = sum(counter.counts.values())
    return counts


STATS = ("wall_median", "wall_min", "cpu_median")


def interleaved_ms(calls: dict[str, callable], runs: int, warmup: int = 3) -> dict[str, dict[str, float]]:
    """{call: {"wall_median", "wall_min", "cpu_median"}} ms, the calls alternated run by run.

    On a machine another job keeps busy, wall time counts the time the scheduler gave to others;
    the thread's CPU time (`time.thread_time`, one torch thread) counts only this call's work, so
    its median is the steadier figure (caches shared with the other job still inflate it a little).
    """
    wall = {name: [] for name in calls}
    cpu = {name: [] for name in calls}
    for index in range(warmup + runs):
        for name, call in calls.items():
            start, start_cpu = time.perf_counter(), time.thread_time()
            call()
            if index >= warmup:
                wall[name].append(1000.0 * (time.perf_counter() - start))
                cpu[name].append(1000.0 * (time.thread_time() - start_cpu))
    return {name: {"wall_median": statistics.median(wall[name]), "wall_min": min(wall[name]),
                   "cpu_median": statistics.median(cpu[name])} for name in calls}


def ratios(ms: dict[str, dict[str, float]]) -> dict[str, float]:
    return {stat: ms["3d"][stat] / ms["2d"][stat] for stat in STATS}


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    torch.set_num_threads(1)
    policy, _ = load_checkpoint(CHECKPOINT)
    config = policy.config
    encoder = HashInstructionEncoder(config.instruction_dim)
    full = NumpyPolicy(policy, instruction_encoder=encoder, precision="fp32")
    torch.manual_seed(0)
    baseline = NumpyPolicy(VLA3DPolicy(config.with_3d(False)), instruction_encoder=encoder, precision="fp32")
    obs = synthetic_observation(config, seed=0)
    counts = {"3d": op_counts(full, obs), "2d": op_counts(baseline, obs)}
    with torch.inference_mode():
        batches = {name: runner.batch_from_observation(obs) for name, runner in (("3d", full), ("2d", baseline))}

    def forward(runner, batch):
        with torch.inference_mode():
            runner.policy.predict(batch, generator=runner.generator)

    forward_ms = interleaved_ms({name: (lambda r=runner, b=batches[name]: forward(r, b))
                                 for name, runner in (("3d", full), ("2d", baseline))}, runs)
    deploy = deploy_observation(config, (480, 640), seed=0)
    infer_ms = interleaved_ms({"3d": lambda: full.infer(deploy), "2d": lambda: baseline.infer(deploy)}, runs)
    print(json.dumps({
        "runs": runs, "threads": torch.get_num_threads(),
        "aten_ops": counts, "aten_ops_3d_over_2d": counts["3d"]["total"] / counts["2d"]["total"],
        "forward_ms": forward_ms, "forward_3d_over_2d": ratios(forward_ms),
        "infer_640x480_ms": infer_ms, "infer_3d_over_2d": ratios(infer_ms),
    }, indent=1))


if __name__ == "__main__":
    main()
