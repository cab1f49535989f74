"""`vla3d eval`: closed-loop success under a perturbation suite, or offline action error.

Closed loop:  vla3d eval --checkpoint runs/3d/final --suite camera --episodes 50 --json docs/eval/3d_camera.json
Offline:      vla3d eval --offline --checkpoint runs/3d/final --data data/heldout --json out.json
Suites, seeds and chunk execution: see `vla3d_ros.evaluate.rollout`.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

from vla3d_ros.model.precision import PRECISIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory")
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--offline", action="store_true", help="action error on --data instead of rollouts")
    parser.add_argument("--data", type=Path, help="--offline: episode directory, a bag or a directory of bags")
    parser.add_argument("--suite", default="nominal",
                        help="nominal, camera, occlusion, one per perturbation dimension, all, or name:level")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per (task, perturbation level)")
    parser.add_argument("--tasks", nargs="+", help="tasks to run (default: the checkpoint's training tasks)")
    parser.add_argument("--split", choices=("val", "test"), default="val",
                        help="validation episodes (every choice is made on these) or test episodes (only for a "
                             "checkpoint about to ship); disjoint seed ranges (default val)")
    parser.add_argument("--seed", type=int, default=0,
                        help="evaluation run seed within the split (episode seeds >= 1,000,000)")
    parser.add_argument("--workers", type=int, default=1, help="rollout processes")
    parser.add_argument("--strips", type=int, default=1, help="PNG strips written per (task, perturbation level)")
    parser.add_argument("--replan-every", type=int, help="control steps between inferences (default: 5 Hz)")
    parser.add_argument("--ensemble-coeff", type=_ensemble_coeff, metavar="K|off",
                        help="ACT temporal-ensembling k of the chunk executor, or 'off' to execute the newest "
                             "chunk only (default: the runtime's executor default)")
    parser.add_argument("--max-steps", type=int, help="step budget per episode (default: the task's)")
    parser.add_argument("--label", help="name of the policy variant in tables (default: the run directory)")
    parser.add_argument("--batch-size", type=int, default=16, help="--offline: samples per forward pass")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="policy forward in bf16 autocast or fp32; auto = bf16 where the CPU/GPU computes "
                             "bf16 natively, else fp32 (default auto; the JSON records the one used)")
    parser.add_argument("--no-instruction-retrieval", dest="instruction_retrieval", action="store_false",
                        help="feed the policy the given instruction as it is, instead of the most similar "
                             "instruction it trained on (model.instruction_retrieval)")


def _ensemble_coeff(text: str) -> float | str:
    if text == "off":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'off', got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number or 'off', got {text!r}")
    return value


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this result (recorded in the JSON, shown in docs/)."""
    words = ["vla3d", "eval", "--checkpoint", str(args.checkpoint), "--json", str(args.json), "--seed", str(args.seed),
             "--precision", args.precision]
    if not args.offline:
        words += ["--split", args.split]
    if args.offline:
        words += ["--offline", "--data", str(args.data)]
    else:
        words += ["--suite", args.suite, "--episodes", str(args.episodes)]
        for flag, value in (("--replan-every", args.replan_every), ("--ensemble-coeff", args.ensemble_coeff),
                            ("--max-steps", args.max_steps), ("--label", args.label)):
            if value is not None:
                words += [flag, str(value)]
        if args.tasks:
            words += ["--tasks", *args.tasks]
        if not args.instruction_retrieval:
            words.append("--no-instruction-retrieval")
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    from vla3d_ros.model.checkpoint import CheckpointError

    try:
        if args.offline:
            if args.data is None:
                raise ValueError("--offline needs --data DIR|BAG")
            from vla3d_ros.evaluate.offline import offline_evaluation

            result = offline_evaluation(args.checkpoint, args.data, batch_size=args.batch_size, device=args.device,
                                        seed=args.seed, precision=args.precision)
            summary = {"l1_normalised_mean": result["l1_normalised_mean"], **result["l1_metric"]}
        else:
            from tqdm import tqdm

            from vla3d_ros.evaluate.rollout import evaluate_closed_loop, split_run_seed

            strip_dir = args.json.with_name(f"{args.json.stem}_strips") if args.strips > 0 else None
            executor = {} if args.ensemble_coeff is None else {
                "ensemble_coeff": None if args.ensemble_coeff == "off" else args.ensemble_coeff}
            result = evaluate_closed_loop(
                args.checkpoint, suite=args.suite, episodes=args.episodes, tasks=args.tasks,
                run_seed=split_run_seed(args.split, args.seed),
                workers=args.workers, strips_per_cell=args.strips, strip_dir=strip_dir,
                replan_every=args.replan_every, max_steps=args.max_steps, label=args.label, device=args.device,
                precision=args.precision, instruction_retrieval=args.instruction_retrieval, **executor, progress=lambda items, total: tqdm(items, total=total, desc="episodes", unit="ep"))
            summary = {"overall": result["overall"], "per_perturbation": {
                name: record["rate"] for name, record in result["per_perturbation"].items()}}
    except (ValueError, CheckpointError, FileNotFoundError) as exc:
        print(f"vla3d eval: error: {exc}", file=sys.stderr)
        return 1
    result["command"] = _command(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(summary, indent=1))
    return 0
