"""Expert rollouts: one episode (optionally recorded), and seeded batches for `vla3d gen`.

Episode `index` of a run with base seed S is reset with `demonstration_seed(S, index, attempt)`, so every
index is reproducible on its own (resumable, order-independent across workers). A failed expert
attempt is retried with the next attempt number (up to `max_attempts`) unless failures are kept.

Recording: step t stores observation t and the expert's action after it; when the task succeeds the
final observation is stored too (with the expert's next action), so an episode ends in its success
state. Episodes stop at success or after the task's `max_steps`.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vla3d_ros.data.episodes import EpisodeWriter, episode_dir_name
from vla3d_ros.sim.env import TabletopEnv
from vla3d_ros.sim.experts import EXPERTS, MAX_PLACE_JITTER, PickPlaceExpert, make_expert
from vla3d_ros.sim.perturbations import parse_perturbations
from vla3d_ros.sim.tasks import get_task


def demonstration_seed(base_seed: int, index: int, attempt: int = 0) -> int:
    return int(np.random.SeedSequence([base_seed, index, attempt]).generate_state(1)[0])


@dataclass
class EpisodeResult:
    index: int
    seed: int
    attempt: int
    success: bool
    num_steps: int                 # control steps executed
    seconds: float
    path: str | None = None        # published episode directory, if recorded
    instruction: str = ""


def run_expert_episode(env: TabletopEnv, seed: int, *, writer: EpisodeWriter | None = None,
                       render: bool = True, goal_variant: int | None = None,
                       place_jitter: float = 0.0, tail_steps: int = 0) -> tuple[bool, int]:
    """Roll the task's expert out from `env.reset(seed, goal_variant=...)`; returns (success, control steps
    to success). `place_jitter`: see `PickPlaceExpert`; a recorded episode keeps the offset used
    (`place_offset`).

    `tail_steps`: after a success, the expert goes on for that many more recorded steps (its last
    phases: releasing, retreating). The action loss masks chunk rows past an episode's end, so
    without a tail a demonstration that ends on the step its gripper starts to open trains "open"
    only in the first row of a chunk; the rows after it, which the temporal ensemble averages in,
    are never trained (experiment 28: the row-0 "open" of 0.6-0.9 executed as 0.3, and the cube was
    never let go). The episode's success is the task's at its first success."""
    if tail_steps < 0:
        raise ValueError(f"tail_steps must be >= 0, got {tail_steps}")
    if writer is not None and not render:
        raise ValueError("recording an episode needs rendering (render=True)")
    observation = env.reset(seed, render=render, goal_variant=goal_variant)
    expert = make_expert(env.task_name, env, place_jitter)
    if writer is not None and place_jitter:
        writer.meta.update(place_jitter=place_jitter, place_offset=[float(v) for v in expert.place_offset])
    success = False
    steps = 0
    while steps < env.task.max_steps and not success:
        action = expert.act(observation)
        if writer is not None:
            writer.add_step(observation, action, env.segmentation())
        observation = env.step(action, render=render)
        steps += 1
        success = env.success()
    for _ in range(tail_steps if success else 0):
        action = expert.act(observation)
        if writer is not None:
            writer.add_step(observation, action, env.segmentation())
        observation = env.step(action, render=render)
    if writer is not None and success:
        writer.add_step(observation, expert.act(observation), env.segmentation())
    return success, steps


@dataclass
class GenerationConfig:
    task: str
    episodes: int
    out: Path | None = None                      # None = dry run (nothing written)
    perturbations: Sequence[str] = ()
    seed: int = 0
    image_size: tuple[int, int] = (128, 128)
    cameras: Sequence[str] = ("front", "side", "wrist")
    keep_failures: bool = False
    max_attempts: int = 3
    render: bool = True
    rgb_format: str = "jpeg"
    start_index: int = 0
    extra_meta: dict = field(default_factory=dict)
    # V > 1: episode index i records goal variant i % V of layout i // V (see Task.goal_variants)
    goal_variants: int = 1
    place_jitter: float = 0.0                    # m, pick-and-place into a bowl (`PickPlaceExpert`)
    tail_steps: int = 0                          # recorded expert steps after the success (`run_expert_episode`)

    def __post_init__(self) -> None:
        if self.episodes < 0:
            raise ValueError(f"episodes must be >= 0, got {self.episodes}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.out is not None and not self.render:
            raise ValueError("writing episodes needs rendering; use render=False only for dry runs")
        parse_perturbations(self.perturbations)   # fail early on a bad "name:level"
        task = get_task(self.task)
        available = len(task.goal_variants(task.sample(np.random.default_rng(0))))
        if not 1 <= self.goal_variants <= available:
            raise ValueError(f"goal_variants must be in [1, {available}] for task {self.task!r}, "
                             f"got {self.goal_variants}")
        if self.tail_steps < 0:
            raise ValueError(f"tail_steps must be >= 0, got {self.tail_steps}")
        if self.place_jitter:
            if not 0.0 < self.place_jitter <= MAX_PLACE_JITTER:
                raise ValueError(f"place_jitter must be in [0, {MAX_PLACE_JITTER}] m, got {self.place_jitter!r}")
            if EXPERTS.get(self.task) is not PickPlaceExpert or not any(s.kind == "bowl" for s in task.objects()):
                raise ValueError(f"place_jitter is for placing into a bowl; task {self.task!r} has no bowl")

    def layout_and_goal(self, index: int) -> tuple[int, int | None]:
        """Episode index -> (layout index that seeds the episode, goal variant or None for the sampled goal)."""
        if self.goal_variants == 1:
            return index, None
        return index // self.goal_variants, index % self.goal_variants


class EpisodeGenerator:
    """Owns one env; `generate(index)` runs (and, with `out`, records) one episode index."""

    def __init__(self, config: GenerationConfig) -> None:
        self.config = config
        self.env = TabletopEnv(config.task, image_size=config.image_size, cameras=config.cameras,
                               perturbations=parse_perturbations(config.perturbations), seed=config.seed)

    def close(self) -> None:
        self.env.close()

    def generate(self, index: int) -> EpisodeResult:
        config = self.config
        attempts = 1 if config.keep_failures else config.max_attempts
        result = None
        layout, goal_variant = config.layout_and_goal(index)
        for attempt in range(attempts):
            seed = demonstration_seed(config.seed, layout, attempt)
            start = time.perf_counter()
            if config.out is None:
                success, steps = run_expert_episode(self.env, seed, render=config.render, goal_variant=goal_variant,
                                                    place_jitter=config.place_jitter, tail_steps=config.tail_steps)
                result = EpisodeResult(index, seed, attempt, success, steps, time.perf_counter() - start,
                                       instruction=self.env.instruction)
            else:
                result = self._record(index, seed, attempt, start, goal_variant)
            if result.success:
                break
        return result

    def _record(self, index: int, seed: int, attempt: int, start: float, goal_variant: int | None) -> EpisodeResult:
        config = self.config
        env = self.env
        meta = {"task": config.task, "seed": seed, "base_seed": config.seed, "episode_index": index,
                "attempt": attempt, "perturbations": list(config.perturbations),
                "step_period": env.control_period, **config.extra_meta}
        if goal_variant is not None:
            meta["goal_variant"] = goal_variant
        with EpisodeWriter(config.out, index, meta, env.camera_names, rgb_format=config.rgb_format) as writer:
            success, steps = run_expert_episode(env, seed, writer=writer, goal_variant=goal_variant,
                                                place_jitter=config.place_jitter, tail_steps=config.tail_steps)
            writer.meta.update(object_ids=env.object_ids(), perturbation_params=env.perturbation_params,
                               instruction_variants=env.task.instruction_variants(env.instance.fields))
            if success or config.keep_failures:
                path = str(writer.close(success))
            else:
                writer.abort()
                path = None
        return EpisodeResult(index, seed, attempt, success, steps, time.perf_counter() - start, path,
                             env.instruction)


def pending_indices(config: GenerationConfig) -> list[int]:
    """Episode indices still to do (published ones are skipped: runs are resumable)."""
    indices = range(config.start_index, config.start_index + config.episodes)
    if config.out is None:
        return list(indices)
    return [i for i in indices if not (Path(config.out) / episode_dir_name(i)).is_dir()]
