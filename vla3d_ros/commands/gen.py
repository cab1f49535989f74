"""`vla3d gen`: generate simulated expert demonstrations into an episode directory.

    vla3d gen --task pick_place_bowl --episodes 100 --out data/ppb [--perturb camera_pose:2 ...]
              [--workers 2] [--seed 0] [--keep-failures]
    vla3d gen --task stack_cubes --episodes 100 --dry-run --no-render --report   # expert success rate
                                                   (first attempt of each seeded index)
    vla3d gen --list-tasks | --list-perturbations

Resumable and idempotent: episode index i always uses the same seeds, and published episodes are
skipped. Only successful expert episodes are kept unless --keep-failures.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", help="task name (see --list-tasks)")
    parser.add_argument("--episodes", type=int, default=10, help="number of episode indices (default 10)")
    parser.add_argument("--out", type=Path, help="output directory (required unless --dry-run)")
    parser.add_argument("--perturb", nargs="+", default=[], metavar="NAME:LEVEL",
                        help="perturbations, e.g. camera_pose:2 light:1 (see --list-perturbations)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--start-index", type=int, default=0, help="first episode index (default 0)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    parser.add_argument("--cameras", nargs="+", default=["front", "side", "wrist"])
    parser.add_argument("--keep-failures", action="store_true", help="keep failed expert episodes too")
    parser.add_argument("--max-attempts", type=int, default=3,
                        help="seeded retries of a failed index when failures are not kept (default 3)")
    parser.add_argument("--rgb-format", choices=("jpeg", "png"), default="jpeg")
    parser.add_argument("--dry-run", action="store_true", help="run the expert, write nothing")
    parser.add_argument("--no-render", action="store_true", help="with --dry-run: skip rendering (faster)")
    parser.add_argument("--report", action="store_true",
                        help="print a markdown row: first-attempt expert success rate, steps, speed")
    parser.add_argument("--goal-variants", type=int, default=1, metavar="V",
                        help="record V goals per layout (episode i = goal i %% V of layout i // V; default 1 = "
                             "the sampled goal). All goals of push_to_zone: 4 (2 cans x 2 zones)")
    parser.add_argument("--place-jitter", type=float, default=0.0, metavar="M",
                        help="pick_place_bowl: release each episode at a seeded point within M metres of the "
                             "bowl's centre instead of at the centre (at most 0.03; default 0)")
    parser.add_argument("--tail-steps", type=int, default=0, metavar="N",
                        help="record N more expert steps after each success (releasing, retreating), so that "
                             "action chunks ending there are trained past the success (default 0)")
    parser.add_argument("--list-tasks", action="store_true")
    parser.add_argument("--list-perturbations", action="store_true")


def _list_tasks() -> None:
    from vla3d_ros.sim.tasks import TASKS

    for name, task in TASKS.items():
        print(f"{name:18s} {task.description}  (max {task.max_steps} steps)")
        print(f"{'':18s} e.g. \"{task.templates[0]}\"")


def _list_perturbations() -> None:
    from vla3d_ros.sim.perturbations import PERTURBATIONS

    for name, cls in PERTURBATIONS.items():
        levels = ",".join(map(str, cls.levels))
        print(f"{name:16s} levels {levels:6s} [{cls.dimension}] {cls.description}")


_GENERATOR = None


def _worker_init(config) -> None:
    global _GENERATOR
    from vla3d_ros.sim.rollout import EpisodeGenerator

    _GENERATOR = EpisodeGenerator(config)


def _worker_generate(index: int):
    return _GENERATOR.generate(index)


def run(args: argparse.Namespace) -> int:
    if args.list_tasks or args.list_perturbations:
        if args.list_tasks:
            _list_tasks()
        if args.list_perturbations:
            _list_perturbations()
        return 0
    if not args.task:
        print("vla3d gen: error: --task is required (see --list-tasks)", file=sys.stderr)
        return 2
    if args.out is None and not args.dry_run:
        print("vla3d gen: error: --out is required unless --dry-run", file=sys.stderr)
        return 2
    if args.no_render and not args.dry_run:
        print("vla3d gen: error: --no-render only makes sense with --dry-run", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"vla3d gen: error: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2

    import numpy as np
    from tqdm import tqdm

    from vla3d_ros.sim.rollout import GenerationConfig, pending_indices
    from vla3d_ros.sim.tasks import TASKS

    if args.task not in TASKS:
        print(f"vla3d gen: error: unknown task {args.task!r}; choose from {', '.join(TASKS)}", file=sys.stderr)
        return 2
    try:
        config = GenerationConfig(
            task=args.task, episodes=args.episodes, out=None if args.dry_run else args.out,
            perturbations=tuple(args.perturb), seed=args.seed, image_size=tuple(args.image_size),
            cameras=tuple(args.cameras), keep_failures=args.keep_failures,
            max_attempts=args.max_attempts, render=not args.no_render, rgb_format=args.rgb_format,
            start_index=args.start_index, goal_variants=args.goal_variants, place_jitter=args.place_jitter,
            tail_steps=args.tail_steps)
    except ValueError as error:
        print(f"vla3d gen: error: {error}", file=sys.stderr)
        return 2
    if config.out is not None:
        config.out.mkdir(parents=True, exist_ok=True)
    indices = pending_indices(config)
    skipped = config.episodes - len(indices)
    start = time.perf_counter()
    results = []
    progress = tqdm(total=len(indices), desc=f"gen {args.task}", unit="ep", file=sys.stderr)
    if args.workers == 1 or len(indices) <= 1:
        _worker_init(config)
        try:
            for index in indices:
                results.append(_worker_generate(index))
                progress.update(1)
                progress.set_postfix(success=f"{sum(r.success for r in results)}/{len(results)}")
        finally:
            _GENERATOR.close()
    else:
        # spawn: each worker opens its own EGL context (never inherited through fork)
        context = multiprocessing.get_context("spawn")
        with context.Pool(args.workers, initializer=_worker_init, initargs=(config,)) as pool:
            for result in pool.imap_unordered(_worker_generate, indices):
                results.append(result)
                progress.update(1)
                progress.set_postfix(success=f"{sum(r.success for r in results)}/{len(results)}")
    progress.close()
    elapsed = time.perf_counter() - start
    successes = sum(r.success for r in results)
    steps = sum(r.num_steps for r in results)
    written = sum(r.path is not None for r in results)
    print(f"{args.task}: {successes}/{len(results)} expert successes, {written} episodes written, "
          f"{skipped} already present; {steps} env steps in {elapsed:.1f} s "
          f"({steps / max(elapsed, 1e-9):.1f} steps/s over {args.workers} worker(s))")
    if args.report:
        perturb = " ".join(args.perturb) or "none"
        # first attempts only: a retried index counts as a failure of the expert
        first = sum(r.success and r.attempt == 0 for r in results)
        mean_steps = np.mean([r.num_steps for r in results if r.attempt == 0 and r.success] or [0.0])
        print("| task | perturbations | episodes | expert success (1st attempt) | mean steps (successes) "
              "| env steps/s |")
        print("|---|---|---|---|---|---|")
        print(f"| {args.task} | {perturb} | {len(results)} | {first / max(len(results), 1):.1%} "
              f"| {mean_steps:.1f} | {steps / max(elapsed, 1e-9):.0f} |")
    return 0
