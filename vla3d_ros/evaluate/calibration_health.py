"""How well the calibration health monitor works, measured in the simulator.

Frames: `episodes` episodes of `steps` frames each, `steps_between` arm motions (control steps)
apart — a robot controlled at 10 Hz and checked at 1 Hz moves 10 between checks — three RGB-D
cameras with depth noise (`sensor_noise:2`), and the arm's link poses (the arm check places the
arm's surface with them; `surface=None` measures the cross-view check alone). The arm motion
(`ARM_MOTIONS`) is either a random walk from the home posture ("random": the arm hovers above the
table, as between tasks) or push_to_zone's scripted expert at work ("expert": the hand goes down
to the cans and pushes them across the table, as while the policy acts; a new layout when a push
succeeds or the task's step budget ends). Two measurements:
- false alarms: the monitor over every frame with the true calibration (checks that WARN);
- sensitivity: for each camera, offset size and axis, a fresh monitor sees the frames with that
  camera's calibration stale by the offset (the camera moved along a base axis or turned about a
  base axis through its own centre; its calibration did not follow);
  detected = WARN naming that camera (alone, or tied with one other) within `consecutive + 1`
  checks. The delay is the number of checks to the WARN times the check period, plus one
  check's compute time (measured).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from vla3d_ros.calibration.arm_check import ArmSurface
from vla3d_ros.calibration.health import CalibrationHealthMonitor, DepthView
from vla3d_ros.geometry import displace_camera, euler_xyz_to_matrix
from vla3d_ros.runtime.config import CalibrationMonitorConfig
from vla3d_ros.types import Observation

ARM_MOTIONS = ("random", "expert")
TRANSLATIONS_CM = (0.5, 1.0, 1.5, 2.0, 3.0)
ROTATIONS_DEG = (0.5, 1.0, 1.5, 2.0, 3.0)


@dataclass
class MonitorEvaluation:
    checks: int = 0
    false_alarms: int = 0
    seconds_per_check: float = 0.0
    check_period: float = 1.0
    consecutive: int = 2
    # (kind "translation"/"rotation", size) -> [detected?, ...] over cameras x axes
    detected: dict[tuple[str, float], list[bool]] = field(default_factory=dict)
    checks_to_warn: list[int] = field(default_factory=list)
    misattributed: int = 0
    missed: list[str] = field(default_factory=list)   # "camera kind size axis" not detected
    windows: int = 1    # windows of frames each camera x offset is tried on

    def table(self) -> str:
        lines = [f"nominal: {self.false_alarms} WARN in {self.checks} checks (false alarms); "
                 f"{self.seconds_per_check:.2f} s per check",
                 f"| offset | detected (cameras x axes{f' x {self.windows} windows' if self.windows > 1 else ''}) |",
                 "| --- | --- |"]
        for (kind, size), hits in sorted(self.detected.items()):
            unit = "cm" if kind == "translation" else "deg"
            lines.append(f"| {size:g} {unit} {kind} | {sum(hits)}/{len(hits)} |")
        if self.checks_to_warn:
            delay = max(self.checks_to_warn) * self.check_period + self.seconds_per_check
            lines.append(f"detection delay: {min(self.checks_to_warn)}-{max(self.checks_to_warn)} checks at "
                         f"{1 / self.check_period:g} Hz -> at most {delay:.1f} s after the move")
        lines.append(f"WARN naming a camera that did not move: {self.misattributed}")
        lines.append("missed: " + (", ".join(self.missed) or "none"))
        return "\n".join(lines)


class Frame(NamedTuple):
    """One instant: the observation and the arm's link poses (name -> (4, 4) T_base_link) at it."""

    observation: Observation
    link_poses: dict[str, np.ndarray]


def render_frames(episodes: int, steps: int, image_size: int, config: CalibrationMonitorConfig,
                  seed: int = 0, steps_between: int = 1, motion: str = "random") -> tuple[list[Frame], ArmSurface]:
    """The frames and the arm's surface (samples `config.arm_spacing` apart, in the link frames)."""
    from vla3d_ros.sim.env import TabletopEnv
    from vla3d_ros.sim.experts import make_expert
    from vla3d_ros.sim.perturbations import parse_perturbation

    if motion not in ARM_MOTIONS:
        raise ValueError(f"arm motion must be one of {ARM_MOTIONS}, got {motion!r}")
    env = TabletopEnv("push_to_zone", image_size=(image_size, image_size),
                      perturbations=[parse_perturbation("sensor_noise:2")])
    surface = env.arm_surface(config.arm_spacing)
    rng = np.random.default_rng(seed)
    frames = []
    try:
        for episode in range(episodes):
            layout_seed = seed + episode
            observation = env.reset(seed=layout_seed)
            expert, task_steps = make_expert(env.task_name, env), 0
            for _ in range(steps):
                for _ in range(steps_between):
                    if motion == "random":
                        action = np.concatenate([rng.uniform(-0.02, 0.02, 3), rng.uniform(-0.1, 0.1, 3), [1.0]])
                    else:
                        if env.success() or task_steps >= env.task.max_steps:
                            # a new layout from an unused seed: episode e's layouts are seed + e + k * episodes
                            layout_seed += episodes
                            observation = env.reset(seed=layout_seed)
                            expert, task_steps = make_expert(env.task_name, env), 0
                        action = expert.act(observation)
                        task_steps += 1
                    observation = env.step(action)
                frames.append(Frame(observation, env.arm_link_poses()))
    finally:
        env.close()
    return frames, surface


def depth_views(observation: Observation, stale: dict[str, np.ndarray] | None = None) -> dict[str, DepthView]:
    """The monitor's input; `stale` replaces a camera's T_base_cam by an out-of-date one."""
    stale = stale or {}
    return {name: DepthView(observation.depth[i], observation.intrinsics[i], stale.get(name, observation.T_base_cam[i]))
            for i, name in enumerate(observation.camera_names)}


def evaluate_monitor(frames: list[Frame], config: CalibrationMonitorConfig, surface: ArmSurface | None, *,
                     translations_cm=TRANSLATIONS_CM, rotations_deg=ROTATIONS_DEG,
                     all_windows: bool = False) -> MonitorEvaluation:
    """See the module docstring; `surface` None = the cross-view check alone. Each camera x offset
    is tried on one window of `consecutive + 1` frames (offsets take turns over the frames), or
    with `all_windows` on every such window of the frames (one detection per window: one window
    is one arm posture sequence, and whether a slide along the table shows depends on it)."""
    result = MonitorEvaluation(check_period=1.0 / config.check_hz, consecutive=config.consecutive)
    monitor = CalibrationHealthMonitor(config)

    def arm(frame: Frame):
        return None if surface is None else surface.posed(frame.link_poses)
    start = time.perf_counter()
    for t, frame in enumerate(frames):
        monitor.check(float(t), depth_views(frame.observation, {}), arm(frame))
        result.checks += 1
        result.false_alarms += bool(monitor.moved)
    result.seconds_per_check = (time.perf_counter() - start) / max(1, len(frames))
    offsets = [("translation", size, axis) for size in translations_cm for axis in range(3)]
    offsets += [("rotation", size, axis) for size in rotations_deg for axis in range(3)]
    window = config.consecutive + 1
    camera_names = frames[0].observation.camera_names
    for camera in camera_names:
        index = camera_names.index(camera)
        for number, (kind, size, axis) in enumerate(offsets):
            # the calibration is the pose from before the camera moved to where it renders from
            translation = -size / 100.0 * np.eye(3)[axis] if kind == "translation" else np.zeros(3)
            rotation = euler_xyz_to_matrix(*-np.radians(size) * np.eye(3)[axis]) if kind == "rotation" else None
            starts = (range(0, len(frames) - window + 1, window) if all_windows
                      else [(number * window) % max(1, len(frames) - window)])
            hits, result.windows = 0, len(starts)
            for start_frame in starts:
                monitor = CalibrationHealthMonitor(config)
                hit = None
                for k, frame in enumerate(frames[start_frame:start_frame + window]):
                    stale = displace_camera(frame.observation.T_base_cam[index], translation, rotation)
                    monitor.check(float(k), depth_views(frame.observation, {camera: stale}), arm(frame))
                    if camera in monitor.moved and len(monitor.moved) <= 2:
                        hit = k + 1
                        break
                result.misattributed += bool(monitor.moved - {camera}) and camera not in monitor.moved
                result.detected.setdefault((kind, size), []).append(hit is not None)
                hits += hit is not None
                if hit is not None and size >= 2.0:
                    result.checks_to_warn.append(hit)
            if hits < len(starts):
                name = f"{camera} {size:g} {'cm' if kind == 'translation' else 'deg'} {'xyz'[axis]}"
                result.missed.append(name if len(starts) == 1 else f"{name} ({len(starts) - hits}/{len(starts)} windows)")
    return result
