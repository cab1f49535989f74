"""`vla3d train`: two-stage training on recorded episodes (METHOD.md §6-7).

Single process:  vla3d train --data data/demos --preset cpu --stage both --out runs/3d
Two tasks:       vla3d train --data data/push_to_zone --data data/pick_place_bowl ...
Two processes:   torchrun --nproc_per_node 2 -m vla3d_ros.cli train --data ... --out ...
(torchrun's RANK/WORLD_SIZE are picked up; gloo on CPU, nccl on GPUs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vla3d_ros.model.precision import PRECISIONS


def _components(text: str) -> tuple[str, ...]:
    from vla3d_ros.train.trainer import COMPONENT_SWITCHES

    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in COMPONENT_SWITCHES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown component(s) {unknown}; choose from {', '.join(COMPONENT_SWITCHES)}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vla3d_ros.train.trainer import PRESET_BUDGETS, STAGE_CHOICES

    parser.add_argument("--data", type=Path, required=True, action="append",
                        help="episode directory (vla3d gen / convert); repeat it to train on several, e.g. "
                             "one per task (one camera set and action layout across all)")
    parser.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, metrics)")
    parser.add_argument("--preset", choices=sorted(PRESET_BUDGETS), default="cpu")
    parser.add_argument("--stage", choices=STAGE_CHOICES, default="both")
    parser.add_argument("--init", type=Path, help="start from this checkpoint (e.g. a stage-1 final)")
    parser.add_argument("--steps", type=int, help="optimiser steps per stage (default: the preset's)")
    parser.add_argument("--batch-size", type=int, help="samples per step and process (default: the preset's)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--whiten-instructions", action="store_true",
                        help="whiten the sentence embedding with this data's instruction statistics "
                             "(base.InstructionWhitening; added to an --init checkpoint that lacks it)")
    parser.add_argument("--instruction-to-actions", action="store_true",
                        help="give the action head a direct, zero-initialised instruction path "
                             "(base.ActionHead; added to an --init checkpoint that lacks it)")
    parser.add_argument("--instruction-film", action="store_true",
                        help="FiLM the visual tokens with the instruction before the trunk, zero-initialised "
                             "(base.ContextTrunk; added to an --init checkpoint that lacks it)")
    parser.add_argument("--renormalize", action="store_true",
                        help="with --init: normalise states and actions with this data's statistics instead of "
                             "the init checkpoint's (for data that widens what the init saw)")
    parser.add_argument("--instruction-variants", action="store_true",
                        help="pair each step with one of its episode's recorded instruction_variants (other "
                             "wordings of the same request) instead of the recorded instruction only")
    parser.add_argument("--refit-whitening", action="store_true",
                        help="with --init: fit the init's instruction whitening again on this data's instructions "
                             "(all --instruction-variants), e.g. after adding training wordings")
    parser.add_argument("--instruction-noise", type=float, default=0.0, metavar="NORM",
                        help="add isotropic Gaussian noise of this norm to each training sample's sentence "
                             "embedding, before whitening (train/instruction_noise.py; the norm to give is "
                             "printed by docs/experiments/instruction_noise_probe.py; default 0 = off)")
    parser.add_argument("--colour-skip", action="store_true",
                        help="add each patch's low-resolution colours to its visual features, zero-initialised "
                             "(base.VisionEncoder; added to an --init checkpoint that lacks it)")
    parser.add_argument("--reasoning-anchor", action="store_true",
                        help="add the reasoning anchor (METHOD §8, reasoning_anchor.py): a token that regresses "
                             "the instructed object's centroid and offsets the action queries; implies "
                             "--instruction-to-actions (added to an --init checkpoint that lacks it)")
    parser.add_argument("--anchor-weight", type=float, metavar="W",
                        help="weight of the reasoning anchor's fact loss (default: the checkpoint's or preset's, 0.1)")
    parser.add_argument("--grounding-weight", type=float, metavar="W",
                        help="the reasoning anchor also learns which visual tokens show the instructed object "
                             "(reasoning_anchor.ObjectGrounding) at this loss weight; implies --reasoning-anchor "
                             "(0 = off; default: the checkpoint's or preset's, 0)")
    parser.add_argument("--spatial-forcing", type=float, metavar="ALPHA",
                        help="Spatial Forcing alignment weight alpha (METHOD §7); 0 = off")
    parser.add_argument("--disable", type=_components, default=(),
                        help="comma-separated 3D components to switch off: fusion,instances,completion,"
                             "aggregation (all four = the 2D baseline)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--keep-checkpoints", type=int, default=2,
                        help="step checkpoints kept besides final/ (default 2; more for success-vs-steps curves)")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="data-loader worker processes")
    parser.add_argument("--threads", type=int, help="torch threads of the training process")
    parser.add_argument("--labeler", choices=("auto", "segmentation", "depth"), default="auto",
                        help="pseudo-label source (auto: sim segmentation when recorded, else depth clusters)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="forward pass in bf16 autocast or fp32; auto = bf16 where the CPU/GPU computes "
                             "bf16 natively, else fp32 (default auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from vla3d_ros.model.checkpoint import CheckpointError
    from vla3d_ros.train.trainer import TrainConfig, TrainingError, train

    try:
        config = TrainConfig(
            data=args.data, out=args.out, preset=args.preset, stage=args.stage, steps=args.steps,
            batch_size=args.batch_size, lr=args.lr, spatial_forcing=args.spatial_forcing,
            whiten_instructions=args.whiten_instructions, instruction_to_actions=args.instruction_to_actions,
            instruction_film=args.instruction_film, colour_skip=args.colour_skip,
            reasoning_anchor=args.reasoning_anchor,
            anchor_weight=args.anchor_weight, grounding_weight=args.grounding_weight,
            disable=args.disable, init=args.init, renormalize=args.renormalize,
            instruction_variants=args.instruction_variants, refit_whitening=args.refit_whitening,
            instruction_noise=args.instruction_noise,
            resume=args.resume, seed=args.seed,
            checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
            log_every=args.log_every, num_workers=args.workers,
            threads=args.threads, labeler=args.labeler, device=args.device, precision=args.precision,
            progress_bar=not args.no_progress)
        results = train(config)
    except (ValueError, TrainingError, FileNotFoundError, CheckpointError) as exc:
        print(f"vla3d train: error: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", 0)) != 0:
        return 0                              # under torchrun only rank 0 reports
    for result in results:
        print(json.dumps({"stage": result.stage, "steps": result.steps, "checkpoint": str(result.final_checkpoint),
                          "minutes": round(result.seconds / 60, 2),
                          "samples_per_s": round(result.samples_per_second, 2),
                          "final_loss": result.last_metrics.get("loss")}))
    if not results:
        print(f"vla3d train: {args.out} is already complete")
    return 0
