"""Training throughput, and the machine's dense-matmul peak it is judged against.

- `matmul_peak`: GFLOP/s of an n x n matmul (512 by default) in fp32 and bf16, on one thread and
  on every core: the best of several timed repeats (the least disturbed by other processes),
  2 n^3 FLOPs each. bf16 is measured even where it is emulated (`native_bf16` says which).
- `synthetic_throughput`: samples/s of stage 1 and stage 2 optimiser steps of the preset on a
  synthetic batch (`model.profiling.training_step_seconds`: forward under autocast, backward,
  the trainer's AdamW, EMA teacher in stage 2), at the requested precision and at fp32; the FLOPs of one
  step (torch's FlopCounterMode: matmuls, convolutions, attention, forward + backward) give the
  achieved GFLOP/s and the fraction of the measured peak.
- `episode_throughput`: samples/s of `vla3d train` itself (the Trainer: data loading in its worker
  process, label cache, optimiser) on a few simulated expert episodes generated for the run; the
  figure is the trainer's own `samples_per_s` of its last logging interval (the first one pays
  the worker start-up).
Training uses every core (the trainer's default threads); the previous thread count is restored.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

import torch

from vla3d_ros.bench.op_counts import training_step_counts
from vla3d_ros.model.config import preset
from vla3d_ros.model.precision import has_native_bf16
from vla3d_ros.model.profiling import training_step_seconds
from vla3d_ros.model.synthetic import synthetic_batch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@contextlib.contextmanager
def torch_threads(count: int):
    """torch intra-op threads set to `count` inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _gflops(dtype: torch.dtype, size: int, repeats: int, calls: int) -> float:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    torch.mm(a, b)                                   # warm-up: kernel selection, allocation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - start) / calls)
    return 2.0 * size ** 3 / best / 1e9


def matmul_peak(size: int = 512, repeats: int = 5, calls: int = 10) -> dict:
    """{"fp32": {"1_thread", "all_threads"}, "bf16": {...}} GFLOP/s, and what was measured."""
    cores = os.cpu_count() or 1
    result: dict = {"size": size, "cores": cores, "native_bf16": has_native_bf16("cpu")}
    for name, dtype in DTYPES.items():
        result[name] = {}
        for label, threads in (("1_thread", 1), ("all_threads", cores)):
            with torch_threads(threads):
                result[name][label] = _gflops(dtype, size, repeats, calls)
    return result


def synthetic_throughput(preset_name: str, precision: str, batch_size: int, steps: int, peak: dict,
                         seed: int = 0) -> dict:
    """Samples/s per stage on a synthetic batch at `precision` and fp32, and the fraction of peak."""
    from vla3d_ros.model.policy import VLA3DPolicy
    from vla3d_ros.train.trainer import make_optimizer

    config, device = preset(preset_name), torch.device("cpu")
    batch = synthetic_batch(config, batch_size, seed=seed)
    result: dict = {"batch_size": batch_size, "steps": steps, "threads": torch.get_num_threads()}
    precisions = [precision] if precision == "fp32" else [precision, "fp32"]
    for stage in (1, 2):
        torch.manual_seed(seed)
        counts = training_step_counts(VLA3DPolicy(config), batch, stage)
        flops = counts["flops"]
        entry = {"flops_per_step": flops, "aten_ops_per_step": counts["aten_ops"]}
        for name in precisions:
            torch.manual_seed(seed)
            wall = training_step_seconds(VLA3DPolicy(config), batch, stage, steps, name,
                                         lambda parameters: make_optimizer(parameters, 1e-4, 1e-4, device))["wall_s"]
            achieved = flops / wall / 1e9
            entry[name] = {"step_s": wall, "samples_per_s": batch_size / wall, "gflops": achieved,
                           "fraction_of_peak": achieved / peak[name]["all_threads"]}
        result[f"stage{stage}"] = entry
    pair = {name: sum(result[f"stage{s}"][name]["step_s"] for s in (1, 2)) for name in precisions}
    result["speedup_vs_fp32"] = pair["fp32"] / pair[precision]   # a stage-1 + stage-2 step pair
    return result


def generate_episodes(out: Path, image_size: tuple[int, int], episodes: int, seed: int = 0,
                      task: str = "push_to_zone") -> list[str]:
    """Simulated expert episodes (failures kept: throughput does not care) -> their directories."""
    from vla3d_ros.sim.rollout import EpisodeGenerator, GenerationConfig

    generator = EpisodeGenerator(GenerationConfig(task=task, episodes=episodes, out=out, seed=seed,
                                                  image_size=tuple(image_size), keep_failures=True))
    try:
        return [generator.generate(index).path for index in range(episodes)]
    finally:
        generator.close()


def episode_throughput(preset_name: str, precision: str, batch_size: int, steps: int, episodes: int,
                       seed: int = 0) -> dict:
    """`vla3d train` (both stages, `steps` each) on freshly generated episodes: samples/s per stage."""
    import csv

    from vla3d_ros.bench.model_latency import HashInstructionEncoder
    from vla3d_ros.train.trainer import TrainConfig, train

    config = preset(preset_name)
    interval = max(1, steps // 2)
    with tempfile.TemporaryDirectory(prefix="vla3d-bench-train-") as tmp:
        data, out = Path(tmp) / "episodes", Path(tmp) / "run"
        start = time.perf_counter()
        generate_episodes(data, config.image_size, episodes, seed)
        generate_s = time.perf_counter() - start
        train_config = TrainConfig(data=data, out=out, preset=preset_name, stage="both", steps=2 * interval,
                                   batch_size=batch_size, log_every=interval, checkpoint_every=2 * interval,
                                   keep_checkpoints=1, num_workers=1, threads=torch.get_num_threads(),
                                   precision=precision, seed=seed, progress_bar=False)
        start = time.perf_counter()
        train(train_config, embed=HashInstructionEncoder(config.instruction_dim).embed, encoder_name="hash")
        train_s = time.perf_counter() - start
        result = {"episodes": episodes, "batch_size": batch_size, "steps_per_stage": 2 * interval,
                  "logging_interval": interval, "generate_s": generate_s, "train_command_s": train_s,
                  "threads": torch.get_num_threads(), "precision": precision}
        for stage in (1, 2):
            with open(out / f"stage{stage}" / "metrics.csv") as handle:
                last = list(csv.DictReader(handle))[-1]
            result[f"stage{stage}"] = {"samples_per_s": float(last["samples_per_s"]),
                                       "data_wait_fraction": float(last["data_wait_fraction"])}
    return result


def training_throughput(preset_name: str = "cpu", precision: str = "fp32", *, batch_size: int = 8,
                        synthetic_steps: int = 3, episode_steps: int = 6, episodes: int = 2,
                        matmul_repeats: int = 5, seed: int = 0) -> dict:
    """Every measurement of the module docstring, as one JSON-able dict (all cores for training)."""
    with torch_threads(os.cpu_count() or 1):
        peak = matmul_peak(repeats=matmul_repeats)
        synthetic = synthetic_throughput(preset_name, precision, batch_size, synthetic_steps, peak, seed)
        real = episode_throughput(preset_name, precision, batch_size, episode_steps, episodes, seed)
    return {"preset": preset_name, "precision": precision, "matmul_peak_gflops": peak, "synthetic": synthetic,
            "episodes": real}
