"""Per-module forward latency of the policy at deploy resolution, and the 3D add-on's share.

What runs is exactly what the inference node runs: `model.policy.NumpyPolicy.infer(obs)` on a
3-camera RGB-D `Observation` at the cameras' resolution (640x480 by default), which resizes the
images to the preset's `image_size` (the deploy resolution, 128x128 for `cpu`) and returns
`timing_ms` per module. The modules are grouped as the issue names them:

    base_backbone = vision + trunk      action_expert = action_head
    3D add-on     = fusion + instances + completion + aggregation

`addon_over_base_ratio` = p50(add-on ms) / p50(base_backbone + action_expert ms), both from the
same forward passes (information: the FLOP/time share of the 3D modules). `infer_3d_over_2d_ratio`
= p50 of the whole 3D inference / p50 of the 2D baseline policy's (every 3D switch off,
`PolicyConfig.with_3d(False)`), both at the same precision and run interleaved so machine load
hits both alike; `addon_over_base_ratio_vs_2d` is that ratio minus one. Weights are seeded
random: latency does not depend on their values except through how many instances pass the
score threshold, which the completion proposal caps (`completion.max_instances`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable

import numpy as np
import torch

from vla3d_ros.bench.op_counts import inference_counts
from vla3d_ros.bench.stats import summarize
from vla3d_ros.model.base import InstructionEncoder
from vla3d_ros.model.config import PolicyConfig, preset
from vla3d_ros.model.policy import VLA3DPolicy
from vla3d_ros.model.policy import NumpyPolicy
from vla3d_ros.model.synthetic import synthetic_observation
from vla3d_ros.types import Observation

GROUPS: dict[str, tuple[str, ...]] = {
    "base_backbone": ("vision", "trunk"),
    "fusion": ("fusion",),
    "instances": ("instances",),
    "completion": ("completion",),
    "aggregation": ("aggregation",),
    "action_expert": ("action_head",),
}
BASE_GROUPS = ("base_backbone", "action_expert")
ADDON_GROUPS = ("fusion", "instances", "completion", "aggregation")
CAMERA_HW = (480, 640)


class HashInstructionEncoder(InstructionEncoder):
    """`InstructionEncoder` (same per-instruction cache) with a deterministic stand-in model.

    Latency runs do not need language understanding, and loading the real sentence encoder costs
    seconds and hundreds of MB; `fast_path` measures the real one separately.
    """

    def __init__(self, dim: int = 384) -> None:
        super().__init__(device="cpu")
        self.dim = dim

    def _load(self):
        return self

    def encode(self, sentences, normalize_embeddings: bool = True):
        rows = []
        for sentence in sentences:
            seed = int.from_bytes(hashlib.sha256(sentence.encode()).digest()[:8], "little")
            row = np.random.default_rng(seed).normal(size=self.dim)
            rows.append(row / np.linalg.norm(row) if normalize_embeddings else row)
        return np.stack(rows).astype(np.float32)


_DEPLOY_OBSERVATIONS: dict[str, Observation] = {}


def deploy_observation(config: PolicyConfig, camera_hw: tuple[int, int] = CAMERA_HW, seed: int = 0) -> Observation:
    """A geometrically consistent synthetic RGB-D observation of the policy's cameras at `camera_hw`.

    Rendering the scene at 640x480 costs about a second and every bench section needs the same
    one: it is rendered once per (config, camera_hw, seed); each call gets a copy (milliseconds),
    so no caller sees another's changes.
    """
    config = config.replace(image_size=tuple(camera_hw))
    key = f"{config!r} seed={seed}"
    if key not in _DEPLOY_OBSERVATIONS:
        _DEPLOY_OBSERVATIONS[key] = synthetic_observation(config, seed=seed)
    obs = _DEPLOY_OBSERVATIONS[key]
    return dataclasses.replace(obs, **{name: value.copy() for name, value in vars(obs).items()
                                       if isinstance(value, np.ndarray)})


def build_runner(config: PolicyConfig, seed: int = 0, encoder: InstructionEncoder | None = None,
                 precision: str = "fp32") -> NumpyPolicy:
    """Seeded random-weight policy in eval mode behind the numpy runner the node uses."""
    torch.manual_seed(seed)
    policy = VLA3DPolicy(config).eval()
    return NumpyPolicy(policy, instruction_encoder=encoder or HashInstructionEncoder(config.instruction_dim), seed=seed,
                       precision=precision)


def _grouped(timing_ms: dict[str, float]) -> dict[str, float]:
    return {group: sum(timing_ms.get(name, 0.0) for name in names) for group, names in GROUPS.items()}


def time_calls(call: Callable[[], object], runs: int, warmup: int) -> list[float]:
    """Wall milliseconds of `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append(1000.0 * (time.perf_counter() - start))
    return samples


def policy_latency(preset_name: str = "cpu", runs: int = 100, warmup: int = 10, seed: int = 0,
                   camera_hw: tuple[int, int] = CAMERA_HW, precision: str = "fp32") -> dict:
    """Per-module latency statistics of the preset's full 3D policy and of its 2D baseline, both
    at `precision` ("fp32" or "bf16").

    Returns {"preset", "precision", "deploy_resolution", "camera_resolution", "runs", "warmup",
    "modules": {group: stats}, "preprocess", "total", "addon", "base", "baseline_2d_total",
    "addon_over_base_ratio", "addon_over_base_ratio_vs_2d", "infer_3d_over_2d_ratio", "counts" (FLOPs and
    aten ops per forward of each, and their 3D / 2D ratios), "parameters", "parameters_2d"}
    (stats = `summarize` output, milliseconds).
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    config = preset(preset_name)
    full = build_runner(config, seed, precision=precision)
    baseline = build_runner(config.with_3d(False), seed, precision=precision)
    obs = deploy_observation(config, camera_hw, seed)
    for _ in range(warmup):
        full.infer(obs)
        baseline.infer(obs)
    per_run: list[dict[str, float]] = []
    baseline_totals: list[float] = []
    for _ in range(runs):  # interleaved: load spikes hit both models alike
        timing = full.infer(obs)["timing_ms"]
        per_run.append({**_grouped(timing), "preprocess": timing["preprocess"], "total": timing["total"]})
        baseline_totals.append(baseline.infer(obs)["timing_ms"]["total"])
    column = lambda key: [row[key] for row in per_run]  # noqa: E731
    addon = [sum(row[g] for g in ADDON_GROUPS) for row in per_run]
    base = [sum(row[g] for g in BASE_GROUPS) for row in per_run]
    result = {
        "preset": preset_name,
        "precision": full.precision,
        "deploy_resolution": list(config.image_size),
        "camera_resolution": list(camera_hw),
        "num_views": config.num_views,
        "runs": runs,
        "warmup": warmup,
        "modules": {group: summarize(column(group)) for group in GROUPS},
        "preprocess": summarize(column("preprocess")),
        "total": summarize(column("total")),
        "addon": summarize(addon),
        "base": summarize(base),
        "baseline_2d_total": summarize(baseline_totals),
        "parameters": full.policy.parameter_counts(),
        "parameters_2d": baseline.policy.parameter_counts(),
    }
    result["addon_over_base_ratio"] = result["addon"]["p50"] / result["base"]["p50"]
    result["addon_over_base_ratio_vs_2d"] = (result["total"]["p50"] - result["baseline_2d_total"]["p50"]) \
        / result["baseline_2d_total"]["p50"]
    result["infer_3d_over_2d_ratio"] = result["total"]["p50"] / result["baseline_2d_total"]["p50"]
    # what the time ratio is made of, independent of machine load
    counts = {"3d": inference_counts(full, obs), "2d": inference_counts(baseline, obs)}
    result["counts"] = {**counts, **{f"3d_over_2d_{key}": counts["3d"][key] / counts["2d"][key]
                                     for key in ("flops", "aten_ops")}}
    return result


def profile_policy(preset_name: str, path, runs: int = 10, seed: int = 0, camera_hw: tuple[int, int] = CAMERA_HW,
                   row_limit: int = 40, precision: str = "fp32") -> str:
    """torch.profiler table (self CPU time, grouped by op and module stack) of `runs` inferences.

    Written to `path` (text) and returned; the evidence for where the forward pass spends time.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    config = preset(preset_name)
    runner = build_runner(config, seed, precision=precision)
    obs = deploy_observation(config, camera_hw, seed)
    for _ in range(3):
        runner.infer(obs)
    with profile(activities=[ProfilerActivity.CPU], with_stack=False, record_shapes=False) as prof:
        for _ in range(runs):
            with record_function("infer"):
                runner.infer(obs)
    modules = torch_module_table(runner, obs, runs)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)
    text = (f"# torch.profiler, preset {preset_name}, {runs} inferences, camera {camera_hw[1]}x{camera_hw[0]}, "
            f"torch threads {torch.get_num_threads()}, {runner.precision}\n\n## time per nn.Module (inclusive, ms per inference)\n\n"
            f"{modules}\n\n## ops by self CPU time\n\n{table}\n")
    with open(path, "w") as handle:
        handle.write(text)
    return text


def torch_module_table(runner: NumpyPolicy, obs: Observation, runs: int, depth: int = 3) -> str:
    """Inclusive wall ms per inference of every submodule up to `depth` levels (forward hooks)."""
    totals: dict[str, float] = {}
    starts: dict[str, list[float]] = {}
    handles = []
    for name, module in runner.policy.named_modules():
        if not name or name.count(".") >= depth:
            continue

        def pre(_module, _inputs, name=name):
            starts.setdefault(name, []).append(time.perf_counter())

        def post(_module, _inputs, _output, name=name):
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - starts[name].pop()

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        for _ in range(runs):
            runner.infer(obs)
    finally:
        for handle in handles:
            handle.remove()
    rows = sorted(totals.items(), key=lambda item: -item[1])
    return "\n".join(f"{1000.0 * seconds / runs:9.3f} ms  {name}" for name, seconds in rows)


def with_overrides(config: PolicyConfig, **sections) -> PolicyConfig:
    """`config` with section fields replaced, e.g. with_overrides(c, completion={"layers": 1})."""
    changes = {name: dataclasses.replace(getattr(config, name), **fields) for name, fields in sections.items()}
    return config.replace(**changes)
