"""Synchronised camera set -> `Observation` -> policy -> `ActionChunk`, with every failure contained.

`ObservationBuilder` assembles the policy input from decoded images, the `CalibrationStore`,
the joint state and the instruction, and validates every size against every other (an image
that does not match its CameraInfo, views of different sizes, a missing joint) with a ValueError
that says which camera / joint / value.

`PolicyRunner` calls any object with `infer(obs) -> dict` (openpi style: numpy in, numpy out;
{"actions": (H, A), "instances": Instances, "completed_points": (P, 3), "timing_ms": {...}}),
measures its latency, and turns exceptions, missing keys, wrong shapes and non-finite actions into
an error `PolicyResult` with no chunk, so the action side keeps holding instead of crashing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from vla3d_ros.runtime.calibration import CalibrationStore
from vla3d_ros.runtime.diagnostics import Level, Status
from vla3d_ros.runtime.watchdog import InferenceOverrunMonitor
from vla3d_ros.types import ActionChunk, Instances, Observation


class Policy(Protocol):
    def infer(self, obs: Observation) -> dict: ...


def validate_instruction(text: Any, max_chars: int) -> str:
    """The instruction stripped of surrounding whitespace; ValueError if empty, too long or not text."""
    if not isinstance(text, str):
        raise ValueError(f"instruction must be a string, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise ValueError("instruction is empty")
    if len(text) > max_chars:
        raise ValueError(f"instruction has {len(text)} characters (limit {max_chars}): {text[:40]!r}...")
    if any(ord(c) < 32 and c not in "\t\n" for c in text):
        raise ValueError(f"instruction contains control characters: {text[:40]!r}")
    return text


@dataclass
class CameraImages:
    """Decoded images of one camera of a synchronised set."""

    rgb: np.ndarray                  # (H, W, 3) uint8
    depth: np.ndarray | None = None  # (H, W) float32 metres, NaN = invalid


@dataclass
class JointPositions:
    """A joint state as the policy reads it (the runtime's side of sensor_msgs/JointState)."""

    names: tuple[str, ...]
    positions: np.ndarray            # (J,)
    stamp: float = 0.0


class ObservationBuilder:
    """Builds validated `Observation`s for the configured cameras (in configured order).

    Args:
        camera_names: observation view order.
        calibration: intrinsics and extrinsics of every camera.
        joint_names: proprioception order (empty = the order of the incoming joint state).
        max_instruction_chars: longer instructions are refused.
    """

    def __init__(self, camera_names: Sequence[str], calibration: CalibrationStore,
                 joint_names: Sequence[str] = (), max_instruction_chars: int = 1000) -> None:
        self.camera_names = tuple(camera_names)
        self.calibration = calibration
        self.joint_names = tuple(joint_names)
        self.max_instruction_chars = max_instruction_chars

    def _joints(self, joint_state: JointPositions) -> tuple[np.ndarray, tuple[str, ...]]:
        positions = np.asarray(joint_state.positions, np.float64)
        if positions.shape != (len(joint_state.names),):
            raise ValueError(f"joint state has {len(joint_state.names)} names but positions {positions.shape}")
        if not np.all(np.isfinite(positions)):
            raise ValueError(f"joint positions are not finite: {positions.tolist()}")
        if not self.joint_names:
            return positions.astype(np.float32), tuple(joint_state.names)
        index = {name: i for i, name in enumerate(joint_state.names)}
        missing = [name for name in self.joint_names if name not in index]
        if missing:
            raise ValueError(f"joint state lacks joints {missing} (has {list(joint_state.names)})")
        return positions[[index[n] for n in self.joint_names]].astype(np.float32), self.joint_names

    def build(self, images: Mapping[str, CameraImages], stamp: float, joint_state: JointPositions,
              ee_pose: np.ndarray, gripper: float, instruction: str) -> Observation:
        """Observation of the set stamped `stamp`; ValueError / CalibrationMissing if unusable."""
        missing = [name for name in self.camera_names if name not in images]
        if missing:
            raise ValueError(f"camera set lacks cameras {missing}")
        rgbs, depths, Ks, Ts = [], [], [], []
        size = None
        for name in self.camera_names:
            camera = images[name]
            calibration = self.calibration.intrinsics(name)
            rgb = np.asarray(camera.rgb)
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise ValueError(f"camera {name!r}: rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
            calibration.check_image_size(rgb.shape[1], rgb.shape[0], f"camera {name!r} color image")
            if camera.depth is not None:
                calibration.check_image_size(camera.depth.shape[1], camera.depth.shape[0],
                                             f"camera {name!r} depth image")
            if size is not None and rgb.shape[:2] != size:
                raise ValueError(f"camera {name!r} is {rgb.shape[1]}x{rgb.shape[0]} but "
                                 f"{self.camera_names[0]!r} is {size[1]}x{size[0]}; all views must match")
            size = rgb.shape[:2]
            rgbs.append(rgb)
            depths.append(camera.depth)
            Ks.append(calibration.K)
            Ts.append(self.calibration.T_base_cam(name))
        if all(d is None for d in depths):
            depth = None
        else:
            # An RGB-only camera among RGB-D ones contributes an all-invalid depth map.
            depth = np.stack([np.full(size, np.nan, np.float32) if d is None else d.astype(np.float32, copy=False)
                              for d in depths])
        ee_pose = np.asarray(ee_pose, np.float64)
        if ee_pose.shape != (7,) or not np.all(np.isfinite(ee_pose)):
            raise ValueError(f"ee_pose must be 7 finite values (xyz + quaternion xyzw), got {ee_pose.tolist()}")
        if not np.isfinite(gripper):
            raise ValueError(f"gripper opening must be finite, got {gripper}")
        joints, joint_names = self._joints(joint_state)
        return Observation(
            camera_names=self.camera_names,
            rgb=np.stack(rgbs),
            depth=depth,
            intrinsics=np.stack(Ks),
            T_base_cam=np.stack(Ts),
            joint_positions=joints,
            ee_pose=ee_pose.astype(np.float32),
            gripper=float(np.clip(gripper, 0.0, 1.0)),
            instruction=validate_instruction(instruction, self.max_instruction_chars),
            stamp=float(stamp),
            joint_names=joint_names,
        )


@dataclass
class PolicyResult:
    chunk: ActionChunk | None
    status: Status
    instances: Instances | None = None
    completed_points: np.ndarray | None = None   # (P, 3) base frame
    timing_ms: dict[str, float] = field(default_factory=dict)
    latency: float = 0.0                         # s, measured around `infer`

    @property
    def ok(self) -> bool:
        return self.chunk is not None


class PolicyRunner:
    """Runs a policy on observations and produces validated `ActionChunk`s.

    Args:
        policy: any object with `infer(obs) -> dict`.
        dimension_names: the action dimensions, e.g. `EE_DELTA_ACTION_NAMES`.
        step_period: seconds between chunk rows (the rate the policy was trained at).
        max_observation_age: observations older than this (s) at `run` time are not inferred on.
        period: the inference period (s); slower calls are counted as overruns and reported WARN.
        clock: monotonic seconds for latency measurement (injectable for tests).
    """

    def __init__(self, policy: Policy, dimension_names: Sequence[str], step_period: float,
                 max_observation_age: float = 0.5, period: float | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if not step_period > 0:
            raise ValueError(f"step_period must be > 0 s, got {step_period}")
        self.policy = policy
        self.dimension_names = tuple(dimension_names)
        self.step_period = step_period
        self.max_observation_age = max_observation_age
        self.clock = clock
        self.overruns = InferenceOverrunMonitor(period) if period is not None else None
        self.calls = 0
        self.failures = 0
        self.last_status = Status("policy", Level.STALE, "not run yet")

    def _fail(self, message: str, latency: float = 0.0) -> PolicyResult:
        self.failures += 1
        self.last_status = Status("policy", Level.ERROR, message,
                                  {"calls": str(self.calls), "failures": str(self.failures)})
        return PolicyResult(None, self.last_status, latency=latency)

    def run(self, obs: Observation, now: float | None = None) -> PolicyResult:
        """Infer on `obs` (at ROS time `now`, for the age check); never raises for policy faults."""
        self.calls += 1
        if now is not None and now - obs.stamp > self.max_observation_age:
            return self._fail(f"observation is {now - obs.stamp:.3f} s old (limit {self.max_observation_age} s)")
        start = self.clock()
        try:
            output = self.policy.infer(obs)
        except Exception as error:  # noqa: BLE001 - any policy fault must hold the arm, not kill the node
            return self._fail(f"policy raised {type(error).__name__}: {error}", self.clock() - start)
        latency = self.clock() - start
        if self.overruns is not None:
            self.overruns.record(latency)
        if not isinstance(output, Mapping) or "actions" not in output:
            return self._fail(f"policy output must be a dict with 'actions', got {type(output).__name__}", latency)
        actions = np.asarray(output["actions"], dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != len(self.dimension_names) or actions.shape[0] < 1:
            return self._fail(f"actions must be (H, {len(self.dimension_names)}), got {actions.shape}", latency)
        if not np.all(np.isfinite(actions)):
            bad = int(np.sum(~np.isfinite(actions)))
            return self._fail(f"policy returned {bad} non-finite action values", latency)
        chunk = ActionChunk(actions.astype(np.float32), self.dimension_names, self.step_period, obs.stamp, latency)
        instances = output.get("instances")
        completed = output.get("completed_points")
        if completed is not None:
            completed = np.asarray(completed, np.float32).reshape(-1, 3)
            completed = completed[np.all(np.isfinite(completed), axis=1)]
        timing = {str(k): float(v) for k, v in dict(output.get("timing_ms") or {}).items()}
        values = {"calls": str(self.calls), "failures": str(self.failures), "latency_ms": f"{latency * 1000:.1f}"}
        overrun = self.overruns.result() if self.overruns is not None else None
        if overrun is not None and not overrun.ok:
            self.last_status = Status("policy", Level.WARN, overrun.reason, values)
        else:
            self.last_status = Status("policy", Level.OK, f"inference {latency * 1000:.1f} ms", values)
        return PolicyResult(chunk, self.last_status, instances if isinstance(instances, Instances) else None,
                            completed, timing, latency)
