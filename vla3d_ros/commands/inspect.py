"""`vla3d inspect`: a policy's parameter counts per component and timed passes on a fake batch.

    vla3d inspect --preset cpu --json
    vla3d inspect --checkpoint runs/x/stage2/final [--batch-size 4] [--stage 1] [--repeats 5]

Everything printed comes from the real model: parameters are counted on the built modules
(the completion predictor's EMA teacher, a frozen copy of the fusion, is reported separately),
and the forward passes run on a synthetic ray-cast tabletop batch (`vla3d_ros.model.synthetic`)
holding every batch key. `addon_ratio` = (fusion + instances + completion + aggregation) / base.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

_REPORTED = ("base", "fusion", "instances", "completion", "aggregation")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", choices=("tiny", "cpu", "gpu"), default=None,
                        help="build a fresh policy of this preset (default cpu)")
    source.add_argument("--checkpoint", type=Path, help="inspect a saved policy directory instead")
    parser.add_argument("--no-3d", action="store_true", help="switch every 3D component off (the 2D baseline)")
    parser.add_argument("--batch-size", type=int, default=2, help="fake batch size (default 2)")
    parser.add_argument("--stage", type=int, choices=(1, 2), default=None,
                        help="training stage whose losses the forward pass computes (default: the policy's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes, median reported (default 3)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _median_ms(function, repeats: int, device) -> float:
    import torch

    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


def inspect_policy(policy, *, batch_size: int, stage: int | None, repeats: int) -> dict:
    """The report of one policy (see the module docstring)."""
    import torch

    from vla3d_ros import types
    from vla3d_ros.model.synthetic import synthetic_batch

    config = policy.config
    device = next(policy.parameters()).device
    if stage is not None:
        policy.set_stage(stage)
    counts = policy.parameter_counts()
    params = {name: counts[name] for name in _REPORTED}
    addon = sum(params[name] for name in _REPORTED if name != "base")
    batch = synthetic_batch(config, batch_size, device=device)
    # inference sees observations only: completion queries are proposed from the instances
    inputs = (types.RGB, types.DEPTH, types.INTRINSICS, types.T_BASE_CAM, types.STATE, types.EE_POSITION,
              types.INSTRUCTION_EMBEDDING)
    infer_batch = {key: batch[key] for key in inputs}
    policy.eval()
    with torch.no_grad():
        losses = policy(batch)                                   # warm-up and the losses reported
        forward_ms = _median_ms(lambda: policy(batch), repeats, device)
        module_ms: dict[str, list[float]] = {}
        for _ in range(repeats):
            timings: dict[str, float] = {}
            output = policy.predict(infer_batch, timings=timings)
            for name, value in timings.items():
                module_ms.setdefault(name, []).append(value)
        infer_ms = _median_ms(lambda: policy.predict(infer_batch), repeats, device)
        context, _, _ = policy._context(infer_batch)
    grid = config.grid_hw
    return {
        "params": params,
        "addon_params": addon,
        "addon_ratio": addon / params["base"],
        "spatial_forcing_params": counts["spatial_forcing"],
        "ema_teacher_params": (sum(p.numel() for p in policy.completion.teacher.parameters())
                               if policy.completion is not None else 0),
        "total_params": sum(p.numel() for p in policy.parameters()),
        "components": {"fusion": config.fusion.enabled, "instances": config.instances.enabled,
                       "completion": config.completion.enabled,
                       "ee_relative_pe": config.aggregation.ee_relative_pe, "routing": config.aggregation.routing,
                       "action_head": config.action_head.kind, "spatial_forcing": config.spatial_forcing.weight},
        "tokens": {"visual": config.num_views * grid[0] * grid[1], "context": int(context.shape[1]),
                   "instances": config.instances.max_instances if policy.instances is not None else 0,
                   "completion": int(output.completion_points.shape[1]) if output.completion_points is not None else 0},
        "stage": policy.stage,
        "batch_size": batch_size,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "forward_ms": forward_ms,
        "infer_ms": infer_ms,
        "infer_module_ms": {name: statistics.median(values) for name, values in module_ms.items()},
        "losses": {name: float(value) for name, value in losses.items()},
    }


def run(args: argparse.Namespace) -> int:
    import torch

    from vla3d_ros.model.checkpoint import CheckpointError, load_checkpoint
    from vla3d_ros.model.config import preset
    from vla3d_ros.model.policy import VLA3DPolicy

    if args.threads is not None:
        if args.threads < 1:
            print(f"vla3d inspect: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    if args.batch_size < 1 or args.repeats < 1:
        print(f"vla3d inspect: --batch-size and --repeats must be >= 1, got {args.batch_size}, {args.repeats}",
              file=sys.stderr)
        return 2
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        print(f"vla3d inspect: bad --device {args.device!r}: {exc}", file=sys.stderr)
        return 2
    if args.checkpoint is not None:
        try:
            policy, _ = load_checkpoint(args.checkpoint, device=device)
        except CheckpointError as exc:
            print(f"vla3d inspect: {exc}", file=sys.stderr)
            return 1
        name = str(args.checkpoint)
    else:
        name = args.preset or "cpu"
        config = preset(name)
        torch.manual_seed(0)
        policy = VLA3DPolicy(config.with_3d(False) if args.no_3d else config).to(device)
    if args.no_3d and args.checkpoint is not None:
        print("vla3d inspect: --no-3d applies to presets only", file=sys.stderr)
        return 2
    report = {"source": name, **inspect_policy(policy, batch_size=args.batch_size, stage=args.stage,
                                               repeats=args.repeats)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"policy {name}: {report['total_params']:,} parameters on {report['device']}")
    for component, count in report["params"].items():
        print(f"  {component:<12} {count:>12,}")
    print(f"  add-on / base ratio {report['addon_ratio']:.3f}")
    print(f"  tokens: {report['tokens']}")
    print(f"  forward (losses, stage {report['stage']}, batch {args.batch_size}): {report['forward_ms']:.1f} ms; "
          f"inference: {report['infer_ms']:.1f} ms")
    for module, ms in report["infer_module_ms"].items():
        print(f"    {module:<12} {ms:8.2f} ms")
    return 0
