"""Closed-loop evaluation in the simulator under the perturbation suites.

Suites (`suite_cells`): each is a list of perturbation cells, every cell a tuple of
`sim.perturbations` specs ("name:level"):

- `nominal`   : no perturbation.
- `camera`    : `camera_pose:1..3`, the held-out camera split: static cameras orbit by >= 10 deg
                azimuth, poses the training distribution (`camera_train`, <= 5 deg) never contains;
                the observation carries the TRUE perturbed calibration (K, T_base_cam).
- `occlusion` : `occlusion:1..3`, a plate between the front camera and the target.
- one suite per other perturbation dimension of `sim.perturbations.PERTURBATIONS`
  (camera_rotation, camera_fov, robot_init, language, light, background, sensor_noise, layout),
  each at levels 1..3; `camera_train` is the training distribution, not an evaluation suite.
- `viewpoint` : camera_pose, camera_rotation and camera_fov, levels 1..3 pooled; `appearance`:
                light and background, levels 1..3 pooled (`POOLED_SUITES`).
- `all`       : every cell above; or a single "name:level" spec.

Splits (`SPLIT_RUN_SEEDS`): run seeds 0..4,999 are the **validation** split, on which every
choice (checkpoint, flags, execution settings, which run ships) is made; run seeds 5,000..9,999
are the **test** split, run only for a checkpoint about to ship (`vla3d eval --split test`).
`--seed k` picks run seed k inside the split (`split_run_seed`); results record both.
Seeds: evaluation episode i of run seed s uses `EVAL_SEED_BASE + s * 10,000 + i`
(EVAL_SEED_BASE = 1,000,000), so the splits' episode seeds are disjoint ranges. Every task and
every perturbation cell uses the same episode seeds, so variants are compared on paired episodes. Demonstrations (`vla3d gen`) use
`sim.rollout.demonstration_seed(base, index, attempt)`, a SeedSequence hash anywhere in [0, 2^32), so
disjointness cannot come from ranges: the trainer records the exact list of training episode
seeds in the checkpoint (`extra["train_episode_seeds"]`) and the evaluator refuses any evaluation
seed in it (a collision has probability ~ N_train * N_eval / 2^32).

Chunk execution is deployment's: `runtime.chunk_executor.ChunkExecutor` with the runtime's
default ACT temporal ensembling coefficient; the policy re-plans every `replan_every` control
steps (default: the runtime's inference rate, 5 Hz, at the sim's 10 Hz control = every 2 steps)
and at each step the executor's ensembled row is sent to the env. Time is the sim's own clock
(step k at k * control_period), so inference latency does not enter the simulation; a rollout is
deterministic given its seed (env seeded by the episode seed, the policy's sampling generator
reseeded with it).

An episode succeeds when the task's success detector fires at any control step within the
task's step budget (`Task.max_steps`); the episode ends there.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from vla3d_ros.model.instruction_retrieval import (TRAINING_INSTRUCTIONS_KEY, RetrievingInstructionEncoder,
                                                  checkpoint_instruction_encoder)
from vla3d_ros.runtime.chunk_executor import ChunkExecutor
from vla3d_ros.runtime.config import ExecutorConfig, RatesConfig
from vla3d_ros.types import ActionChunk

EVAL_SEED_BASE = 1_000_000
SEEDS_PER_RUN_SEED = 10_000
# Suites that pool several perturbation dimensions (the generalisation issue's targets are pooled).
POOLED_SUITES = {"viewpoint": ("camera_pose", "camera_rotation", "camera_fov"), "appearance": ("light", "background")}
SPLIT_RUN_SEEDS = {"val": (0, 5_000), "test": (5_000, 10_000)}   # [first, end) run seeds per split


def split_run_seed(split: str, seed: int) -> int:
    """Run seed of `vla3d eval --split SPLIT --seed SEED`: the SEED-th run seed of the split."""
    if split not in SPLIT_RUN_SEEDS:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(SPLIT_RUN_SEEDS)}")
    first, end = SPLIT_RUN_SEEDS[split]
    if not 0 <= seed < end - first:
        raise ValueError(f"--seed must be in [0, {end - first}) within split {split!r}, got {seed}")
    return first + seed


def run_seed_split(run_seed: int) -> str:
    """The split a run seed belongs to."""
    for split, (first, end) in SPLIT_RUN_SEEDS.items():
        if first <= run_seed < end:
            return split
    raise ValueError(f"run seed {run_seed} is in no split {SPLIT_RUN_SEEDS}")


LEVELS = (1, 2, 3)


def _not_suites() -> tuple[str, ...]:
    """Perturbations that are not evaluation suites: the training distribution, and the calibration
    splits (a knocked camera: run by name, e.g. "camera_knock_stale:1")."""
    from vla3d_ros.sim.perturbations import CALIBRATION_SPLITS, TRAINING_PERTURBATIONS

    return tuple(cls.name for cls in (*TRAINING_PERTURBATIONS, *CALIBRATION_SPLITS))


def evaluation_seed(run_seed: int, index: int) -> int:
    """Simulator seed of evaluation episode `index` for run seed `run_seed` (disjoint from training)."""
    if not 0 <= index < SEEDS_PER_RUN_SEED or run_seed < 0:
        raise ValueError(f"need run_seed >= 0 and 0 <= index < {SEEDS_PER_RUN_SEED}, got {run_seed}, {index}")
    return EVAL_SEED_BASE + run_seed * SEEDS_PER_RUN_SEED + index


def suite_names() -> list[str]:
    from vla3d_ros.sim.perturbations import PERTURBATIONS

    others = [name for name in PERTURBATIONS if name not in ("camera_pose", "occlusion", *_not_suites())]
    return ["nominal", "camera", "occlusion", *others, *POOLED_SUITES, "all"]


def suite_cells(suite: str) -> list[tuple[str, ...]]:
    """Perturbation cells of a suite: each a tuple of "name:level" specs (empty = nominal)."""
    from vla3d_ros.sim.perturbations import PERTURBATIONS, parse_perturbation

    if suite == "nominal":
        return [()]
    if suite in POOLED_SUITES:
        return [cell for name in POOLED_SUITES[suite] for cell in suite_cells(name)]
    if suite == "all":
        return [cell for name in suite_names() if name not in ("all", *POOLED_SUITES) for cell in suite_cells(name)]
    name = {"camera": "camera_pose"}.get(suite, suite)
    if ":" in suite:
        return [(parse_perturbation(suite).spec,)]
    if name in PERTURBATIONS and name not in _not_suites():
        return [(PERTURBATIONS[name](level).spec,) for level in PERTURBATIONS[name].levels]
    raise ValueError(f"unknown suite {suite!r}; choose from {suite_names()} or a 'name:level' perturbation")


@dataclass(frozen=True)
class RolloutSettings:
    replan_every: int = 2
    ensemble_coeff: float | None = ExecutorConfig().temporal_ensemble_coeff
    max_steps: int | None = None           # None = the task's budget
    image_size: tuple[int, int] = (128, 128)
    cameras: tuple[str, ...] = ("front", "side", "wrist")
    precision: str = "fp32"                # the policy forward's (`model.precision`), resolved
    instruction_retrieval: bool = True     # act on the most similar trained instruction (`model.instruction_retrieval`)

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be a resolved precision (fp32 or bf16), got {self.precision!r}")
        if not isinstance(self.replan_every, int) or self.replan_every < 1:
            raise ValueError(f"replan_every must be a positive integer, got {self.replan_every!r}")
        if self.ensemble_coeff is not None and not math.isfinite(self.ensemble_coeff):
            raise ValueError(f"ensemble_coeff must be finite or None, got {self.ensemble_coeff!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps!r}")


def default_replan_every(control_period: float) -> int:
    """Control steps between inferences at the runtime's default inference rate."""
    return max(1, round(1.0 / (RatesConfig().inference_hz * control_period)))


@dataclass
class EpisodeOutcome:
    task: str
    cell: tuple[str, ...]
    index: int
    seed: int
    success: bool
    steps: int
    instruction: str
    seconds: float
    final_ee_position: tuple[float, float, float]
    # xy distance (m) each object ended from where it started, keyed "target" for the instructed
    # object and by slot name for the others: tells "moved the wrong object" from "missed"
    object_displacement: dict[str, float] = field(default_factory=dict)
    understood_as: str | None = None       # the trained instruction acted on, when retrieval ran
    frames: list[np.ndarray] = field(default_factory=list, repr=False)   # (V, H, W, 3) per step if recorded

    def to_dict(self) -> dict:
        return {"task": self.task, "perturbation": cell_name(self.cell), "index": self.index, "seed": self.seed,
                "success": self.success, "steps": self.steps, "instruction": self.instruction,
                "final_ee_position": list(self.final_ee_position),
                "object_displacement": {name: round(value, 4) for name, value in self.object_displacement.items()},
                "seconds": round(self.seconds, 3),
                **({} if self.understood_as is None else {"understood_as": self.understood_as})}


def object_displacement(env, start: dict[str, np.ndarray]) -> dict[str, float]:
    """xy distance of every object from its `start` position; the instructed one is named "target"."""
    target = env.instance.roles.get("target")
    return {("target" if slot == target else slot): float(np.linalg.norm(env.object_position(slot)[:2] - xy))
            for slot, xy in start.items()}


def cell_name(cell: Sequence[str]) -> str:
    return "+".join(cell) if cell else "nominal"


def run_evaluation_episode(runner, env, *, task: str, cell: tuple[str, ...], index: int, seed: int,
                           settings: RolloutSettings, step_period: float, record: bool = False) -> EpisodeOutcome:
    """One closed-loop episode: policy chunks -> ChunkExecutor -> env.step, until success or budget."""
    start = time.perf_counter()
    runner.generator.manual_seed(seed)
    obs = env.reset(seed=seed)
    start_xy = {slot: env.object_position(slot)[:2].copy() for slot in env.instance.poses}
    executor = ChunkExecutor(ensemble_coeff=settings.ensemble_coeff, max_chunk_age=ExecutorConfig().max_chunk_age)
    budget = settings.max_steps or env.task.max_steps
    frames = [obs.rgb.copy()] if record else []
    success, steps = False, 0
    for step in range(budget):
        now = step * step_period
        if step % settings.replan_every == 0:
            actions = np.asarray(runner.infer(obs)["actions"], np.float64)
            reason = executor.add(ActionChunk(actions=actions, dimension_names=runner.config.action_names,
                                              step_period=step_period, stamp=now))
            if reason is not None:
                raise RuntimeError(f"episode seed {seed} step {step}: chunk refused: {reason}")
        executed = executor.action_at(now)
        if executed is None:   # cannot happen while replan_every <= horizon (checked by the worker)
            raise RuntimeError(f"episode seed {seed} step {step}: no chunk covers t={now:.2f}s")
        obs = env.step(executed.action)
        steps = step + 1
        if record:
            frames.append(obs.rgb.copy())
        if env.success():
            success = True
            break
    encoder = runner.instruction_encoder
    understood = (encoder.match(env.instruction).instruction
                  if isinstance(encoder, RetrievingInstructionEncoder) else None)
    return EpisodeOutcome(task, cell, index, seed, success, steps, env.instruction, time.perf_counter() - start,
                          tuple(float(v) for v in obs.ee_pose[:3]), object_displacement(env, start_xy),
                          understood, frames)


@dataclass(frozen=True)
class EpisodeJob:
    task: str
    cell: tuple[str, ...]
    index: int
    seed: int
    record: bool


class RolloutWorker:
    """Holds one policy runner and one env per (task, cell); runs jobs in order."""

    def __init__(self, checkpoint: Path, settings: RolloutSettings, *, device: str = "cpu",
                 instruction_encoder=None, threads: int | None = None) -> None:
        import torch

        from vla3d_ros.model.checkpoint import load_checkpoint
        from vla3d_ros.model.policy import NumpyPolicy

        if threads is not None:
            torch.set_num_threads(threads)
        policy, meta = load_checkpoint(checkpoint, device=device)
        instruction_encoder = checkpoint_instruction_encoder(meta, instruction_encoder, device=device,
                                                             retrieval=settings.instruction_retrieval)
        self.runner = NumpyPolicy(policy, instruction_encoder=instruction_encoder, precision=settings.precision)
        self.step_period = float(meta["step_period"])
        self.settings = settings
        if settings.replan_every > policy.config.horizon:
            raise ValueError(f"replan_every {settings.replan_every} exceeds the policy's horizon "
                             f"{policy.config.horizon}: steps would have no action")
        self._envs: dict[tuple[str, tuple[str, ...]], object] = {}

    def _env(self, task: str, cell: tuple[str, ...]):
        from vla3d_ros.sim.env import TabletopEnv
        from vla3d_ros.sim.perturbations import parse_perturbations

        key = (task, cell)
        if key not in self._envs:
            env = TabletopEnv(task, image_size=self.settings.image_size, cameras=self.settings.cameras,
                              perturbations=parse_perturbations(cell))
            if not math.isclose(env.control_period, self.step_period, rel_tol=1e-6):
                raise ValueError(f"checkpoint step period {self.step_period}s != sim control period "
                                 f"{env.control_period}s")
            self._envs[key] = env
        return self._envs[key]

    def run(self, job: EpisodeJob) -> EpisodeOutcome:
        return run_evaluation_episode(self.runner, self._env(job.task, job.cell), task=job.task, cell=job.cell,
                                      index=job.index, seed=job.seed, settings=self.settings,
                                      step_period=self.step_period, record=job.record)

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


# Process-pool plumbing: one RolloutWorker per process, built by the initializer.
_WORKER: RolloutWorker | None = None


def _init_pool(checkpoint: str, settings: RolloutSettings, device: str) -> None:
    global _WORKER
    _WORKER = RolloutWorker(Path(checkpoint), settings, device=device, threads=1)


def _run_in_pool(job: EpisodeJob) -> EpisodeOutcome:
    return _WORKER.run(job)


def run_jobs(checkpoint: Path, jobs: Sequence[EpisodeJob], settings: RolloutSettings, *, workers: int = 1,
             device: str = "cpu", instruction_encoder=None, progress=None) -> list[EpisodeOutcome]:
    """Outcomes of `jobs` in job order; each episode depends only on its seed, so any number of
    worker processes gives the same outcomes."""
    progress = progress or (lambda iterable, total: iterable)
    if workers <= 1:
        worker = RolloutWorker(checkpoint, settings, device=device, instruction_encoder=instruction_encoder)
        try:
            return [worker.run(job) for job in progress(jobs, len(jobs))]
        finally:
            worker.close()
    import multiprocessing

    # spawn: EGL contexts and torch's thread pools do not survive fork.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_pool, initargs=(str(checkpoint), settings, device)) as pool:
        return list(progress(pool.imap(_run_in_pool, jobs), len(jobs)))


# ---- a whole evaluation --------------------------------------------------------------------------

def build_jobs(tasks: Sequence[str], cells: Sequence[tuple[str, ...]], episodes: int, run_seed: int,
               strips_per_cell: int) -> list[EpisodeJob]:
    """Every (task, cell, episode) of an evaluation; the first `strips_per_cell` are recorded."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes!r}")
    return [EpisodeJob(task, tuple(cell), index, evaluation_seed(run_seed, index), index < strips_per_cell)
            for task in tasks for cell in cells for index in range(episodes)]


def check_seed_disjointness(checkpoint_meta: dict, jobs: Sequence[EpisodeJob]) -> None:
    """Refuse evaluation seeds that the checkpoint's training episodes used."""
    training = set((checkpoint_meta.get("extra") or {}).get("train_episode_seeds") or ())
    clash = sorted({job.seed for job in jobs} & training)
    if clash:
        raise ValueError(f"evaluation seeds {clash[:5]} were used by training episodes of this checkpoint; "
                         "pick another --seed")


def summarize_outcomes(outcomes: Sequence[EpisodeOutcome]) -> dict:
    """Success per task, per perturbation cell, per (task, cell) and overall, with Wilson CIs."""
    from vla3d_ros.evaluate.stats import SuccessRate

    def group(key) -> dict:
        groups: dict[str, list[bool]] = {}
        for outcome in outcomes:
            groups.setdefault(key(outcome), []).append(outcome.success)
        return {name: SuccessRate.from_outcomes(values).to_dict() for name, values in groups.items()}

    return {
        "overall": SuccessRate.from_outcomes(o.success for o in outcomes).to_dict(),
        "per_task": group(lambda o: o.task),
        "per_perturbation": group(lambda o: cell_name(o.cell)),
        "per_cell": group(lambda o: f"{o.task}|{cell_name(o.cell)}"),
    }


def evaluate_closed_loop(checkpoint: Path, *, suite: str, episodes: int, tasks: Sequence[str] | None = None,
                         run_seed: int = 0, workers: int = 1, strips_per_cell: int = 1,
                         strip_dir: Path | None = None, replan_every: int | None = None,
                         max_steps: int | None = None, label: str | None = None, device: str = "cpu",
                         ensemble_coeff: float | None = RolloutSettings.ensemble_coeff, precision: str = "auto",
                         instruction_retrieval: bool = True, instruction_encoder=None, progress=None) -> dict:
    """`vla3d eval`: every (task, cell, episode) of the suite; returns the JSON-able result.
    `ensemble_coeff`: the chunk executor's ACT k (None = newest chunk only; default the runtime's).
    `precision`: the policy forward's, "auto" resolved on this machine (`model.precision`).
    `instruction_retrieval`: act on the most similar trained instruction (`model.instruction_retrieval`;
    a checkpoint that does not list its trained instructions runs without)."""
    from vla3d_ros.evaluate.report import episode_strip
    from vla3d_ros.model.checkpoint import read_checkpoint_meta
    from vla3d_ros.model.config import PolicyConfig
    from vla3d_ros.model.precision import resolve_precision
    from vla3d_ros.sim.tasks import TASKS

    meta = read_checkpoint_meta(checkpoint)
    config = PolicyConfig.from_dict(meta["config"])
    extra = meta.get("extra") or {}
    tasks = list(tasks or extra.get("tasks") or sorted(TASKS))
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {sorted(TASKS)}")
    cameras = tuple(extra.get("camera_names") or ("front", "side", "wrist")[:config.num_views])
    settings = RolloutSettings(replan_every=replan_every or default_replan_every(float(meta["step_period"])),
                               ensemble_coeff=ensemble_coeff, max_steps=max_steps,
                               image_size=tuple(config.image_size), cameras=cameras,
                               precision=resolve_precision(precision, device),
                               instruction_retrieval=instruction_retrieval and bool(extra.get(TRAINING_INSTRUCTIONS_KEY)))
    cells = suite_cells(suite)
    jobs = build_jobs(tasks, cells, episodes, run_seed, strips_per_cell if strip_dir is not None else 0)
    check_seed_disjointness(meta, jobs)
    outcomes = run_jobs(Path(checkpoint), jobs, settings, workers=workers, device=device,
                        instruction_encoder=instruction_encoder, progress=progress)
    strips = []
    for outcome in outcomes:
        if outcome.frames:
            name = f"{outcome.task}_{cell_name(outcome.cell).replace(':', '')}_{outcome.index:03d}.png"
            title = (f"{outcome.task} | {cell_name(outcome.cell)} | seed {outcome.seed} | "
                     f"{'success' if outcome.success else 'failure'} in {outcome.steps} steps")
            strips.append(str(episode_strip(outcome.frames, Path(strip_dir) / name, title=title)))
    return {
        "label": label or Path(checkpoint).resolve().parent.name,
        "checkpoint": str(checkpoint), "suite": suite, "tasks": tasks,
        "perturbations": [cell_name(cell) for cell in cells], "episodes_per_cell": episodes,
        "split": run_seed_split(run_seed), "run_seed": run_seed,
        "episode_seeds": [evaluation_seed(run_seed, 0), evaluation_seed(run_seed, episodes - 1)],
        "train_episodes_checked_disjoint": len(extra.get("train_episode_seeds") or ()),
        "settings": {"replan_every": settings.replan_every, "ensemble_coeff": settings.ensemble_coeff,
                     "max_steps": settings.max_steps, "image_size": list(settings.image_size),
                     "cameras": list(settings.cameras), "step_period": float(meta["step_period"]),
                     "precision": settings.precision, "instruction_retrieval": settings.instruction_retrieval},
        **summarize_outcomes(outcomes),
        "episodes": [outcome.to_dict() for outcome in outcomes],
        "strips": strips,
    }
