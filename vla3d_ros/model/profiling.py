"""Model speed measurements: CPU seconds per training step and per-module inference latency.

    .venv/bin/python -m vla3d_ros.model.profiling --preset cpu --batch 8 --threads 1
    .venv/bin/python -m vla3d_ros.model.profiling --profile 2     # + torch.profiler table, stage 2
    .venv/bin/python -m vla3d_ros.model.profiling --precision bf16 --threads 2

Training: one AdamW step as the trainer does it (forward, backward, optimiser step, EMA teacher
update in stage 2) on a synthetic batch (`synthetic.py`); reported as process CPU seconds per
step (median over `--steps` after one warm-up step), which stays meaningful on a shared machine
where wall time does not. Inference: `VLA3DPolicy.predict` under `torch.inference_mode` at batch
1, per module, wall milliseconds (minimum over `--runs`, the least disturbed by other processes)
and the process CPU milliseconds of the whole call (median).
Synthetic batches are built once up front so the numbers exclude their numpy ray casting.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable

import torch

from vla3d_ros import types
from vla3d_ros.model.config import preset
from vla3d_ros.model.policy import VLA3DPolicy
from vla3d_ros.model.precision import PRECISIONS, autocast, resolve_precision
from vla3d_ros.model.synthetic import synthetic_batch


def training_step_seconds(policy: VLA3DPolicy, batch: dict, stage: int, steps: int, precision: str = "fp32",
                          make_optimizer: Callable[[list], torch.optim.Optimizer] | None = None) -> dict[str, float]:
    """CPU and wall seconds per optimiser step of `stage` (median over `steps` after a warm-up),
    the forward under `precision`'s autocast ("fp32" or "bf16", `model.precision`);
    `make_optimizer(parameters)` (default: torch's AdamW) e.g. the trainer's."""
    policy.start_stage(stage)
    policy.train()
    make_optimizer = make_optimizer or (lambda parameters: torch.optim.AdamW(parameters, lr=1e-4))
    optimizer = make_optimizer(policy.trainable_parameters())
    generator = torch.Generator().manual_seed(0)
    device = next(policy.parameters()).device
    cpu, wall = [], []
    for step in range(steps + 1):
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        with autocast(precision, device):
            loss = policy(batch, generator=generator)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if stage == 2:
            policy.update_teacher(step, 100)
        if step:  # the first step pays one-off allocation costs
            cpu.append(time.process_time() - cpu_start)
            wall.append(time.perf_counter() - wall_start)
    return {"cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall)}


def inference_ms(policy: VLA3DPolicy, batch: dict, runs: int) -> dict[str, float]:
    """Per-module wall ms (min over runs) and the whole call's CPU ms (median), batch as given."""
    policy.eval()
    per_module: dict[str, list[float]] = {}
    cpu = []
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for run in range(runs + 1):
            timings: dict[str, float] = {}
            cpu_start = time.process_time()
            policy.predict(batch, timings=timings, generator=generator)
            if run:
                cpu.append(1000.0 * (time.process_time() - cpu_start))
                for name, value in timings.items():
                    per_module.setdefault(name, []).append(value)
    result = {name: min(values) for name, values in per_module.items()}
    result["sum_of_modules"] = sum(result.values())
    result["call_cpu_ms"] = statistics.median(cpu)
    return result


def profile_table(policy: VLA3DPolicy, batch: dict, stage: int, rows: int = 25, precision: str = "fp32") -> str:
    """torch.profiler CPU table (self CPU time) of one training step of `stage` at `precision`."""
    from torch.profiler import ProfilerActivity, profile

    training_step_seconds(policy, batch, stage, 1, precision)  # warm-up, and sets the stage
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-4)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        with autocast(precision, next(policy.parameters()).device):
            loss = policy(batch, generator=torch.Generator().manual_seed(0))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--batch", type=int, default=8, help="training batch size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per stage")
    parser.add_argument("--runs", type=int, default=10, help="timed inference calls")
    parser.add_argument("--profile", type=int, choices=(1, 2), help="also print a profiler table of this stage")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="training forward in bf16 autocast or fp32 (auto: bf16 where native); default fp32")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = preset(args.preset)
    policy = VLA3DPolicy(config)
    train_batch = synthetic_batch(config, args.batch, seed=0)
    # inference as deployed: no completion labels, so the predictor proposes its own queries
    infer_batch = {key: value for key, value in synthetic_batch(config, 1, seed=1).items()
                   if key not in (types.COMPLETION_POINTS, types.COMPLETION_VALID)}
    precision = resolve_precision(args.precision, "cpu")
    results = {"preset": args.preset, "batch": args.batch, "threads": torch.get_num_threads(), "precision": precision}
    for stage in (1, 2):
        results[f"train_stage{stage}"] = training_step_seconds(policy, train_batch, stage, args.steps, precision)
        print(f"stage {stage}: {results[f'train_stage{stage}']['cpu_s']:.2f} CPU s/step "
              f"({results[f'train_stage{stage}']['wall_s']:.2f} s wall), batch {args.batch}", flush=True)
    results["inference_ms"] = inference_ms(policy, infer_batch, args.runs)
    print("inference (batch 1, stage 2), ms: "
          + ", ".join(f"{name} {value:.1f}" for name, value in results["inference_ms"].items()))
    if args.profile:
        print(profile_table(policy, train_batch, args.profile, precision=precision))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
