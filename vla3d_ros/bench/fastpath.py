"""The deployment fast path, measured: each claim about the inference hot path is checked by a number.

- `inference_mode`: the runner's forward under `torch.inference_mode` vs `no_grad` vs autograd on.
- batched views: the vision backbone on all V views as one (B*V) batch vs a loop over views, with
  the outputs checked equal.
- 3D RoPE tables: how many rotation tables (`Rope3D.table`, a pure function of one point set)
  are built per inference and how many times they are applied (`Rope3D.apply`, q and k of every
  attention): tables are built once per point set and shared by q, k and every layer.
- instruction embedded once: N inferences with one instruction make one encoder call; the cold
  embed vs the cached lookup.
- depth unprojection: `CameraCalibration.unproject` with its per-calibration ray cache, cold vs
  warm, and the model's per-forward `patch_points`.
- precision and `torch.compile`: the numpy runner in bf16 autocast (`PolicyRunner(precision=)`)
  and/or with a compiled forward (`compile_runner`); `compare_runners` checks their actions
  against the fp32 eager runner.
Message-buffer zero-copy is measured where messages exist (`vla3d_ros.apps.bench_graph`).
"""
from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import torch

from vla3d_ros.bench.model_latency import (CAMERA_HW, HashInstructionEncoder, build_runner, deploy_observation,
                                           time_calls)
from vla3d_ros.bench.stats import summarize
from vla3d_ros.model.base import InstructionEncoder
from vla3d_ros.model.config import preset
from vla3d_ros.model.geometry_ops import Rope3D, patch_points
from vla3d_ros.model.policy import NumpyPolicy
from vla3d_ros.model.precision import autocast
from vla3d_ros.runtime.calibration import CameraCalibration
from vla3d_ros.types import Observation


class _PredictProxy:
    """Stands in for the policy inside `NumpyPolicy`: `predict` runs `forward_fn` (compiled or not).

    Per-module timings need timers between modules, which a compiled graph does not have, so
    the proxy drops the `timings` request and the runner reports only "preprocess" and "total".
    """

    def __init__(self, policy, forward_fn) -> None:
        self._policy = policy
        self._forward_fn = forward_fn

    def predict(self, batch, *, timings=None, generator=None):
        return self._forward_fn(batch, generator=generator)

    def __getattr__(self, name):
        return getattr(self._policy, name)


def compile_runner(runner: NumpyPolicy, backend: str = "inductor") -> NumpyPolicy:
    """`runner` with its policy's `predict` wrapped in `torch.compile` (the first call compiles).

    The runner's own autocast (`precision`) still wraps the compiled forward. `backend`:
    "inductor", or "eager" (only traces, for tests).
    """
    forward = torch.compile(runner.policy.predict, backend=backend, dynamic=False)
    runner.policy = _PredictProxy(runner.policy, forward)
    return runner


def compare_runners(reference: NumpyPolicy, candidate, obs: Observation, runs: int, warmup: int) -> dict:
    """Actions of `candidate` vs `reference` on `obs` (max |diff|, relative to max |reference|) and latency."""
    expected = reference.infer(obs)["actions"]
    start = time.perf_counter()
    actual = candidate.infer(obs)["actions"]
    first_call_s = time.perf_counter() - start
    diff = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    scale = float(np.max(np.abs(expected))) or 1.0
    return {"max_abs_diff": diff, "max_rel_diff": diff / scale, "first_call_s": first_call_s,
            "latency_ms": summarize(time_calls(lambda: candidate.infer(obs), runs, warmup)),
            "reference_ms": summarize(time_calls(lambda: reference.infer(obs), runs, warmup))}


def _grad_modes(runner: NumpyPolicy, obs: Observation, runs: int, warmup: int) -> dict:
    """p50 ms of the policy forward under each autograd mode."""
    with torch.inference_mode():
        batch = runner.batch_from_observation(obs)
    batch = {key: value.clone() for key, value in batch.items()}  # plain tensors, usable with autograd
    modes = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad, "autograd": contextlib.nullcontext}
    out = {}
    for name, mode in modes.items():
        def forward(mode=mode):
            with mode(), autocast(runner.precision, runner.device):
                runner.policy.predict(batch, generator=runner.generator)
        out[name] = summarize(time_calls(forward, runs, warmup))["p50"]
    return out


def _batched_views(runner: NumpyPolicy, obs: Observation, runs: int, warmup: int) -> dict:
    """Batched vs per-view backbone: outputs compared in fp32 (batching, not precision, is the
    question), timed at the runner's precision."""
    with torch.inference_mode():
        rgb = runner.batch_from_observation(obs)["rgb"]                      # (1, V, 3, H, W)
        vision, dtype = runner.policy.vision, runner.policy.dtype
        batched = vision(rgb, dtype)
        looped = torch.cat([vision(rgb[:, v:v + 1], dtype) for v in range(rgb.shape[1])], dim=1)
        same = bool(torch.allclose(batched, looped, atol=1e-5, rtol=1e-4))
        with autocast(runner.precision, runner.device):
            batched_ms = summarize(time_calls(lambda: vision(rgb, dtype), runs, warmup))["p50"]
            looped_ms = summarize(time_calls(
                lambda: [vision(rgb[:, v:v + 1], dtype) for v in range(rgb.shape[1])], runs, warmup))["p50"]
    return {"views": int(rgb.shape[1]), "batched_ms_p50": batched_ms, "per_view_loop_ms_p50": looped_ms,
            "outputs_equal": same}


@contextlib.contextmanager
def _rope_probe(policy):
    """Times every `Rope3D.table` and `Rope3D.apply` call of `policy`: {"table": [...], "apply": [...]}.

    Each entry is (seconds, rows): the token count the table was built for or the rotated x had.
    `Rope3D.rotate` is table + apply, so it is counted through them.
    """
    calls: dict[str, list[tuple[float, int]]] = {"table": [], "apply": []}
    ropes = [m for m in policy.modules() if isinstance(m, Rope3D)]
    for rope in ropes:
        for name in calls:
            original = getattr(rope, name)

            def timed(x, *args, original=original, record=calls[name], **kwargs):
                start = time.perf_counter()
                out = original(x, *args, **kwargs)
                record.append((time.perf_counter() - start, int(x.shape[1])))
                return out
            setattr(rope, name, timed)   # instance attribute shadows the method for this measurement only
    try:
        yield calls
    finally:
        for rope in ropes:
            for name in calls:
                delattr(rope, name)


def _rope_cost(runner: NumpyPolicy, obs: Observation, runs: int) -> dict:
    """How often the 3D RoPE builds a rotation table and applies one per inference, and their cost.

    A table is a pure function of one point set; every attention over that set (q and k, every
    layer of a stack) applies the same table, so `applies_per_table` > 1 is the sharing.
    """
    with torch.inference_mode():
        runner.infer(obs)
        with _rope_probe(runner.policy) as calls:
            for _ in range(runs):
                runner.infer(obs)
    tables, applies = calls["table"], calls["apply"]
    per_inference = lambda entries: 1000.0 * sum(seconds for seconds, _ in entries) / runs  # noqa: E731
    return {"table_calls_per_inference": len(tables) / runs, "apply_calls_per_inference": len(applies) / runs,
            "applies_per_table": len(applies) / len(tables) if tables else 0.0,
            "table_ms_per_inference": per_inference(tables), "apply_ms_per_inference": per_inference(applies),
            "table_token_counts": sorted({rows for _, rows in tables})}


def _instruction_cache(encoder: InstructionEncoder, runs: int) -> dict:
    instruction = "put the red block on the green block"
    start = time.perf_counter()
    encoder.embed(instruction)
    cold_ms = 1000.0 * (time.perf_counter() - start)
    warm = time_calls(lambda: encoder.embed(instruction), runs, 0)
    return {"encoder": type(encoder).__name__, "encoder_calls_for_runs": encoder.calls, "runs": runs + 1,
            "cold_embed_ms": cold_ms, "cached_embed_ms_p50": summarize(warm)["p50"]}


def _unprojection(obs: Observation, runner: NumpyPolicy, runs: int) -> dict:
    height, width = obs.rgb.shape[1:3]
    calibration = CameraCalibration(obs.intrinsics[0], width, height)
    depth = obs.depth[0]
    start = time.perf_counter()
    calibration.unproject(depth, obs.T_base_cam[0])
    cold_ms = 1000.0 * (time.perf_counter() - start)
    warm = summarize(time_calls(lambda: calibration.unproject(depth, obs.T_base_cam[0]), runs, 1))["p50"]
    with torch.inference_mode():
        batch = runner.batch_from_observation(obs)
        patch_ms = summarize(time_calls(lambda: patch_points(batch["depth"], batch["intrinsics"], batch["T_base_cam"],
                                                             runner.config.patch_size), runs, 1))["p50"]
    return {"image": [height, width], "unproject_cold_ms": cold_ms, "unproject_cached_rays_ms_p50": warm,
            "model_patch_points_ms_p50": patch_ms}


def fast_path_checks(preset_name: str = "cpu", runs: int = 30, warmup: int = 3, seed: int = 0,
                     real_encoder: bool = False, compile: bool = False,
                     camera_hw: tuple[int, int] = CAMERA_HW, precision: str = "fp32") -> dict:
    """Every fast-path measurement of the module docstring, as one JSON-able dict.

    The runner measured runs at `precision`; "bf16_autocast" compares a bf16 runner with an fp32
    one whatever `precision` is, "torch_compile" a compiled runner with the eager one at `precision`.
    """
    config = preset(preset_name)
    encoder = InstructionEncoder() if real_encoder else HashInstructionEncoder(config.instruction_dim)
    runner = build_runner(config, seed, encoder, precision)
    obs = deploy_observation(config, camera_hw, seed)
    result = {"instruction_cache": _instruction_cache(encoder, runs)}
    for _ in range(warmup):
        runner.infer(obs)
    result["grad_mode_ms_p50"] = _grad_modes(runner, obs, runs, warmup)
    result["batched_views"] = _batched_views(runner, obs, runs, warmup)
    result["rope"] = _rope_cost(runner, obs, max(1, runs // 5))
    result["unprojection"] = _unprojection(obs, runner, runs)
    result["bf16_autocast"] = compare_runners(build_runner(config, seed, encoder, "fp32"),
                                              build_runner(config, seed, encoder, "bf16"),
                                              obs, max(3, runs // 3), 1)
    if compile:
        result["torch_compile"] = compare_runners(runner, compile_runner(build_runner(config, seed, encoder, precision)),
                                                  obs, max(3, runs // 3), 2)
    else:
        result["torch_compile"] = None
    for key in ("bf16_autocast", "torch_compile"):
        entry = result[key]
        if entry is not None:
            entry["speedup_p50"] = entry["reference_ms"]["p50"] / entry["latency_ms"]["p50"]
            entry["finite"] = math.isfinite(entry["max_abs_diff"])
    return result
