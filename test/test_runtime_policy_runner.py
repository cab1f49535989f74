"""Observation building (size validation) and the policy runner's fault containment."""
from __future__ import annotations

import re

import numpy as np
import pytest

from vla3d_ros.geometry import intrinsics_from_fovy
from vla3d_ros.runtime.calibration import CalibrationMissing, CalibrationStore
from vla3d_ros.runtime.diagnostics import Level
from vla3d_ros.runtime.policy_runner import (
    CameraImages,
    JointPositions,
    ObservationBuilder,
    PolicyRunner,
    validate_instruction,
)
from vla3d_ros.types import EE_DELTA_ACTION_NAMES, Instances

H, W = 24, 32
K = intrinsics_from_fovy(60.0, W, H)
EE_POSE = np.array([0.5, 0.0, 0.3, 0.0, 0.0, 0.0, 1.0])


def store(cameras=("front", "wrist")) -> CalibrationStore:
    calibration = CalibrationStore("base", {name: f"{name}_optical" for name in cameras})
    for i, name in enumerate(cameras):
        calibration.update_camera_info(name, K.ravel(), W, H)
        T = np.eye(4)
        T[0, 3] = i
        calibration.set_extrinsics(name, T)
    return calibration


def images(rng, depth_for=("front",), size=(H, W)):
    return {name: CameraImages(rng.integers(0, 255, (*size, 3), dtype=np.uint8),
                               rng.uniform(0.5, 1.5, size).astype(np.float32) if name in depth_for else None)
            for name in ("front", "wrist")}


JOINTS = JointPositions(("j2", "j1", "j3"), np.array([0.2, 0.1, 0.3]), 1.0)


def test_builder_orders_views_and_joints_and_fills_missing_depth():
    rng = np.random.default_rng(0)
    builder = ObservationBuilder(("wrist", "front"), store(), joint_names=("j1", "j2", "j3"))
    frames = images(rng)
    obs = builder.build(frames, 12.5, JOINTS, EE_POSE, 0.7, "  pick up the cube ")
    assert obs.camera_names == ("wrist", "front") and obs.stamp == 12.5
    np.testing.assert_array_equal(obs.rgb[1], frames["front"].rgb)
    np.testing.assert_array_equal(obs.depth[1], frames["front"].depth)
    assert np.all(np.isnan(obs.depth[0]))  # RGB-only wrist camera
    np.testing.assert_allclose(obs.T_base_cam[:, 0, 3], [1.0, 0.0])
    np.testing.assert_allclose(obs.joint_positions, [0.1, 0.2, 0.3])
    assert obs.instruction == "pick up the cube" and obs.joint_names == ("j1", "j2", "j3")
    rgb_only = builder.build(images(rng, depth_for=()), 1.0, JOINTS, EE_POSE, 0.7, "go")
    assert rgb_only.depth is None


def test_builder_rejects_inconsistent_inputs():
    rng = np.random.default_rng(1)
    builder = ObservationBuilder(("front", "wrist"), store(), joint_names=("j1", "j2", "j3"))
    with pytest.raises(ValueError, match="color image is 16x12 but its CameraInfo says 32x24"):
        builder.build(images(rng, size=(12, 16)), 0.0, JOINTS, EE_POSE, 1.0, "go")
    frames = images(rng)
    frames["front"].depth = np.ones((H, W + 1), np.float32)
    with pytest.raises(ValueError, match="'front' depth image is 33x24"):
        builder.build(frames, 0.0, JOINTS, EE_POSE, 1.0, "go")
    with pytest.raises(ValueError, match=r"lacks joints \['j3'\]"):
        builder.build(images(rng), 0.0, JointPositions(("j1", "j2"), np.zeros(2)), EE_POSE, 1.0, "go")
    with pytest.raises(ValueError, match="lacks cameras"):
        builder.build({"front": images(rng)["front"]}, 0.0, JOINTS, EE_POSE, 1.0, "go")
    with pytest.raises(ValueError, match="ee_pose must be 7 finite"):
        builder.build(images(rng), 0.0, JOINTS, np.full(7, np.nan), 1.0, "go")
    missing = ObservationBuilder(("front",), CalibrationStore("base", {"front": "f"}))
    with pytest.raises(CalibrationMissing, match="no valid CameraInfo"):
        missing.build(images(rng), 0.0, JOINTS, EE_POSE, 1.0, "go")


@pytest.mark.parametrize("text, match", [("", "empty"), ("   ", "empty"), ("x" * 100_000, "100000 characters"),
                                         ("go\x00", "control characters"), (None, "must be a string")])
def test_bad_instructions_are_refused(text, match):
    with pytest.raises(ValueError, match=match):
        validate_instruction(text, 1000)


class ScriptedPolicy:
    def __init__(self, output=None, error=None, latency=0.0, clock=None):
        self.output, self.error, self.latency, self.clock = output, error, latency, clock

    def infer(self, obs):
        if self.clock is not None:
            self.clock.t += self.latency
        if self.error is not None:
            raise self.error
        return self.output


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def observation():
    rng = np.random.default_rng(2)
    builder = ObservationBuilder(("front", "wrist"), store())
    return builder.build(images(rng), 5.0, JOINTS, EE_POSE, 1.0, "go")


def test_runner_produces_a_chunk_with_measured_latency():
    clock = FakeClock()
    actions = np.arange(4 * 7, dtype=np.float64).reshape(4, 7) / 100
    instances = Instances(np.arange(2), np.array([0.9, 0.2], np.float32), np.zeros((2, 3), np.float32))
    policy = ScriptedPolicy({"actions": actions, "instances": instances,
                             "completed_points": np.array([[0, 0, 1], [np.nan, 0, 0]]),
                             "timing_ms": {"fusion": 3}}, latency=0.25, clock=clock)
    runner = PolicyRunner(policy, EE_DELTA_ACTION_NAMES, step_period=0.1, clock=clock)
    result = runner.run(observation(), now=5.1)
    assert result.ok and result.status.level == Level.OK
    assert result.chunk.stamp == 5.0 and result.chunk.step_period == 0.1
    assert result.latency == pytest.approx(0.25) and result.chunk.inference_latency == pytest.approx(0.25)
    np.testing.assert_allclose(result.chunk.actions, actions, rtol=1e-6)
    assert result.instances is instances and result.completed_points.shape == (1, 3)
    assert result.timing_ms == {"fusion": 3.0}


@pytest.mark.parametrize(
    "policy, match",
    [
        (ScriptedPolicy(error=RuntimeError("CUDA out of memory")), "policy raised RuntimeError: CUDA out of memory"),
        (ScriptedPolicy({"actions": np.full((4, 7), np.nan)}), "28 non-finite action values"),
        (ScriptedPolicy({"actions": np.zeros((4, 6))}), r"actions must be \(H, 7\), got \(4, 6\)"),
        (ScriptedPolicy({"chunk": 1}), "must be a dict with 'actions'"),
        (ScriptedPolicy(None), "must be a dict with 'actions', got NoneType"),
    ],
)
def test_runner_contains_policy_faults(policy, match):
    runner = PolicyRunner(policy, EE_DELTA_ACTION_NAMES, step_period=0.1)
    result = runner.run(observation())
    assert result.chunk is None and result.status.level == Level.ERROR
    assert re.search(match, result.status.message), result.status.message
    assert runner.failures == 1


def test_runner_skips_stale_observations():
    policy = ScriptedPolicy(error=AssertionError("must not be called"))
    runner = PolicyRunner(policy, EE_DELTA_ACTION_NAMES, step_period=0.1, max_observation_age=0.5)
    result = runner.run(observation(), now=6.0)
    assert result.chunk is None and "1.000 s old" in result.status.message
