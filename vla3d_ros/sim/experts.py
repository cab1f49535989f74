"""Scripted experts: privileged-state waypoint followers emitting the policy's own action space.

An expert reads object poses from the simulator (not from images) and walks a list of phases;
each phase has a tool-centre-point goal (position + yaw about the vertical, gripper pointing down),
a gripper command and a completion test. Every step it outputs the EE delta towards the goal,
scaled so no axis exceeds the controller's per-step limit (straight-line motion), so the recorded
actions are exactly what a policy must produce.

Yaw: the tool's yaw psi is defined by R = Rz(psi) @ R_DOWN; a cube is grasped across a pair of faces,
psi = cube yaw wrapped to [-pi/4, pi/4).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import mujoco
import numpy as np

from vla3d_ros.geometry import euler_xyz_to_matrix, matrix_to_euler_xyz
from vla3d_ros.sim.controller import MAX_ROTATION, MAX_TRANSLATION, orientation_error
from vla3d_ros.sim.scene import object_half_height
from vla3d_ros.types import Observation

if TYPE_CHECKING:
    from vla3d_ros.sim.env import TabletopEnv

# Tool orientation pointing straight down at the home posture: hand y (finger travel) along base x.
R_DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
OPEN, CLOSED = 1.0, 0.0
# m: a cube of 2 cm half-size (half-diagonal 2.8 cm) released 3 cm off a bowl's centre still clears
# its 6.5 cm inner wall by 0.7 cm
MAX_PLACE_JITTER = 0.03


def wrap_quarter_turn(angle: float) -> float:
    """Angle modulo pi/2, in [-pi/4, pi/4): the equivalent grasp yaw of a square object."""
    return float((angle + np.pi / 4) % (np.pi / 2) - np.pi / 4)


def delta_action(position: np.ndarray, rotation: np.ndarray, goal_position: np.ndarray, goal_yaw: float,
                 gripper: float) -> np.ndarray:
    """(7,) action moving straight towards the goal pose within the per-step limits."""
    translation = goal_position - position
    largest = np.max(np.abs(translation))
    if largest > MAX_TRANSLATION:
        translation = translation * (MAX_TRANSLATION / largest)
    rotation_vector = orientation_error(euler_xyz_to_matrix(0.0, 0.0, goal_yaw) @ R_DOWN, rotation)
    largest = np.max(np.abs(rotation_vector))
    if largest > MAX_ROTATION:
        rotation_vector = rotation_vector * (MAX_ROTATION / largest)
    quat = np.empty(4)
    mujoco.mju_axisAngle2Quat(quat, rotation_vector / max(np.linalg.norm(rotation_vector), 1e-12),
                              np.linalg.norm(rotation_vector))
    R_delta = np.empty(9)
    mujoco.mju_quat2Mat(R_delta, quat)
    euler = matrix_to_euler_xyz(R_delta.reshape(3, 3))
    return np.concatenate([translation, euler, [gripper]])


@dataclass
class Phase:
    name: str
    goal: Callable[[], tuple[np.ndarray, float]]   # -> (position goal (3,), yaw goal)
    gripper: float
    tolerance: float = 0.006                       # metres, position error that completes it
    min_steps: int = 0                             # e.g. waiting for the gripper to close
    yaw_tolerance: float = 0.05


class Expert:
    """Walks `phases`; `act(obs)` returns the next (7,) action. Subclasses build the phases."""

    def __init__(self, env: TabletopEnv) -> None:
        self.env = env
        self.phases = self.build_phases()
        self.index = 0
        self.steps_in_phase = 0

    def build_phases(self) -> list[Phase]:
        raise NotImplementedError

    @property
    def phase(self) -> str:
        return self.phases[min(self.index, len(self.phases) - 1)].name

    def current_yaw(self) -> float:
        R = self.env.ee_rotation() @ R_DOWN.T
        return float(np.arctan2(R[1, 0], R[0, 0]))

    def act(self, observation: Observation) -> np.ndarray:
        position = observation.ee_pose[:3].astype(np.float64)
        rotation = self.env.ee_rotation()
        while True:
            phase = self.phases[min(self.index, len(self.phases) - 1)]
            goal, yaw = phase.goal()
            error = np.max(np.abs(goal - position))
            yaw_error = abs(np.angle(np.exp(1j * (yaw - self.current_yaw()))))
            done = (error < phase.tolerance and yaw_error < phase.yaw_tolerance
                    and self.steps_in_phase >= phase.min_steps)
            if done and self.index < len(self.phases) - 1:
                self.index += 1
                self.steps_in_phase = 0
                continue
            break
        self.steps_in_phase += 1
        return delta_action(position, rotation, goal, yaw, phase.gripper)


class PickPlaceExpert(Expert):
    """Pick roles["target"] and release it above roles["place"] (bowl or cube).

    `place_jitter` (m, bowl only): each episode releases at a point drawn uniformly from the disc
    of that radius around the bowl's centre (seeded by the episode), not at the centre. With
    releases only at the exact centre, a policy whose estimate of the bowl was 1.5-2.5 cm off
    lowered the cube there and never opened: "low, holding, above the bowl" had been followed by
    "open" only within the lowering tolerance of the centre (experiment 27). Any point of the disc
    still drops the cube inside (`PickPlaceBowl.bowl_inner_radius` less the cube's half-diagonal).
    """

    hover = 0.1        # above the object's top before descending
    carry_height = 0.13

    def __init__(self, env: TabletopEnv, place_jitter: float = 0.0) -> None:
        if not 0.0 <= place_jitter <= MAX_PLACE_JITTER:
            raise ValueError(f"place_jitter must be in [0, {MAX_PLACE_JITTER}] m, got {place_jitter!r}")
        self.place_jitter = place_jitter
        rng = np.random.default_rng([env.episode_seed, zlib.crc32(b"place_jitter")])
        radius, angle = place_jitter * np.sqrt(rng.uniform()), rng.uniform(0.0, 2.0 * np.pi)
        self.place_offset = np.array([radius * np.cos(angle), radius * np.sin(angle)])
        super().__init__(env)

    def build_phases(self) -> list[Phase]:
        env = self.env
        roles = env.instance.roles
        target, place = roles["target"], roles["place"]
        target_spec, place_spec = env.task.spec(target), env.task.spec(place)
        half = object_half_height(target_spec)
        grasp_yaw = wrap_quarter_turn(env.object_yaw(target)) if target_spec.kind == "cube" else 0.0
        if place_spec.kind == "bowl":
            release_z = 0.008 + 2 * half + 0.015 - half
            place_yaw = grasp_yaw
            offset = np.append(self.place_offset, 0.0)
        elif self.place_jitter:
            raise ValueError(f"place_jitter is for placing into a bowl; {place!r} is a {place_spec.kind}")
        else:  # stack: square up with the cube below
            release_z = 2 * object_half_height(place_spec) + half + 0.008
            place_yaw = wrap_quarter_turn(env.object_yaw(place))
            offset = np.zeros(3)
        state = {}

        def above_target():
            p = env.object_position(target)
            return np.array([p[0], p[1], 2 * half + self.hover]), grasp_yaw

        def at_target():
            p = env.object_position(target)
            return np.array([p[0], p[1], max(half, 0.015)]), grasp_yaw

        def grasp_point():
            state.setdefault("grasp", at_target()[0])
            return state["grasp"], grasp_yaw

        def lifted():
            return np.array([*state["grasp"][:2], self.carry_height]), grasp_yaw

        def above_place():
            p = env.object_position(place) + offset
            return np.array([p[0], p[1], self.carry_height]), place_yaw

        def at_place():
            p = env.object_position(place) + offset
            return np.array([p[0], p[1], release_z]), place_yaw

        def released():
            state.setdefault("release", env.ee_pose()[:3].copy())
            return state["release"], place_yaw

        def retreat():
            return state["release"] + np.array([0.0, 0.0, 0.06]), place_yaw

        return [
            Phase("approach", above_target, OPEN, tolerance=0.01, yaw_tolerance=0.04),
            Phase("descend", at_target, OPEN, tolerance=0.005),
            Phase("close", grasp_point, CLOSED, tolerance=1.0, min_steps=4, yaw_tolerance=1.0),
            Phase("lift", lifted, CLOSED, tolerance=0.015, yaw_tolerance=1.0),
            Phase("carry", above_place, CLOSED, tolerance=0.008, yaw_tolerance=0.05),
            Phase("lower", at_place, CLOSED, tolerance=0.005),
            Phase("release", released, OPEN, tolerance=1.0, min_steps=3, yaw_tolerance=1.0),
            Phase("retreat", retreat, OPEN, tolerance=0.005, yaw_tolerance=1.0),
        ]


class PushExpert(Expert):
    """Push roles["target"] (a can) along y into roles["zone"] with the closed fingers."""

    push_height = 0.022
    clearance = 0.045

    def build_phases(self) -> list[Phase]:
        env = self.env
        task = env.task
        target, zone = env.instance.roles["target"], env.instance.roles["zone"]
        radius = task.spec(target).size[0]
        low, high = task.zone_bounds(zone)
        direction = 1.0 if zone.endswith("left") else -1.0
        goal_y = (low[1] + high[1]) / 2

        def behind(z):
            def goal():
                p = env.object_position(target)
                return np.array([p[0], p[1] - direction * (radius + self.clearance), z]), 0.0
            return goal

        def pushing():
            p = env.object_position(target)
            return np.array([p[0], goal_y - direction * (radius + 0.012), self.push_height]), 0.0

        def retreat():
            p = env.ee_pose()[:3]
            return np.array([p[0], p[1] - direction * 0.03, 0.1]), 0.0

        return [
            Phase("approach", behind(0.12), CLOSED, tolerance=0.01, yaw_tolerance=0.04),
            Phase("descend", behind(self.push_height), CLOSED, tolerance=0.005),
            Phase("push", pushing, CLOSED, tolerance=0.005),
            Phase("retreat", retreat, CLOSED, tolerance=0.005),
        ]


EXPERTS: dict[str, type[Expert]] = {
    "pick_place_bowl": PickPlaceExpert,
    "stack_cubes": PickPlaceExpert,
    "push_to_zone": PushExpert,
}


def make_expert(task_name: str, env: TabletopEnv, place_jitter: float = 0.0) -> Expert:
    """The scripted expert for `task_name`; call after `env.reset()` (it reads the episode layout).
    `place_jitter`: see `PickPlaceExpert` (0 = release at the place's centre)."""
    if task_name not in EXPERTS:
        raise ValueError(f"no expert for task {task_name!r}; choose from {sorted(EXPERTS)}")
    if env.instance is None:
        raise RuntimeError("make_expert needs a reset env (the expert reads the episode layout)")
    if place_jitter:
        if EXPERTS[task_name] is not PickPlaceExpert:
            raise ValueError(f"place_jitter is for pick-and-place tasks; {task_name!r} has no place")
        return PickPlaceExpert(env, place_jitter)
    return EXPERTS[task_name](env)
