"""Perturbations mirroring LIBERO-Plus's 7 dimensions, plus occlusion, each with severity levels.

| name            | LIBERO-Plus dimension | what changes (levels 1 -> 3 stronger)                                 |
|-----------------|-----------------------|-----------------------------------------------------------------------|
| camera_pose     | camera viewpoint      | static cameras orbit their look-at point (azimuth/elevation/distance) |
| camera_rotation | camera viewpoint      | static cameras rotate in place (pan, tilt, roll)                      |
| camera_fov      | camera viewpoint      | static cameras' vertical field of view (K changes with it)            |
| robot_init      | robot initial state   | arm joints start away from home                                       |
| language        | language              | held-out paraphrases (synonyms -> restructured -> chatty)             |
| light           | light                 | key light direction/intensity/colour, ambient level                   |
| background      | background / texture  | table texture, table/wall/floor colours                               |
| sensor_noise    | sensor noise          | RGB noise; depth noise growing with z^2, plus holes (NaN)             |
| layout          | layout                | 1/2/3 distractor objects placed among the task objects                |
| occlusion       | (extra split)         | a plate between the front camera and the target, covering more/less   |
| camera_train    | (training split)      | small camera jitter: THE training distribution of camera poses        |
| *_train         | (training split)      | the randomised training distribution (`TRAINING_PERTURBATIONS`)       |
| camera_knock*   | (calibration split)   | the front camera knocked by `CAMERA_KNOCK_LEVELS`; the policy is told |
|                 |                       | its true pose, the stale one (`_stale`) or the one `vla3d calibrate`  |
|                 |                       | recovers in the simulator (`_recalibrated`)                           |

Camera split (for the evaluation engineer): training data may use the nominal poses and
`camera_train` (|azimuth| <= 5 deg, |elevation| <= 3 deg, |distance change| <= 3 %, about the look-at
point). `camera_pose` at every level samples |azimuth| >= 10 deg, so its poses never occur in training:
it is the held-out "unseen camera" split. `CAMERA_TRAIN_RANGE` and `CAMERA_POSE_LEVELS` define both.
Camera perturbations touch the static cameras (front, side), not the wrist camera, and act on the
model, so the observation's K and T_base_cam are the true, perturbed calibration.

The randomised training distribution (`TRAINING_PERTURBATIONS`: `camera_wide_train`, `light_train`,
`background_train`, `zones_train`, `robot_init_train`) is what a user would record to make a policy
hold when cameras, light, table and robot posture change. Every evaluation level stays outside it, by
construction and checked by `test_sim_perturbations.py`: each training parameter is sampled from
intervals that bracket, but never meet, the intervals of the evaluation levels (`TRAINING_BANDS`
against `evaluation_bands()`; the nominal value, no change, is the one value both may draw), colours come from outside the evaluation's colour boxes, and table
textures from a training-only set. So success on the suites measures interpolation between nominal
and a wider training envelope, never recall of a seen condition.

Seeding: the env gives each perturbation its own generator derived from the episode seed; sensor noise
draws from the episode's noise generator, so an episode replays exactly. `apply` returns the sampled
parameters (JSON-able) for the episode metadata.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar

import mujoco
import numpy as np

from vla3d_ros.geometry import (
    displace_camera,
    euler_xyz_to_matrix,
    matrix_to_quaternion_xyzw,
    quaternion_xyzw_to_matrix,
)
from vla3d_ros.sim.scene import (
    COLORS,
    DEFAULT_CAMERAS,
    TABLE_TEXTURES,
    TRAINING_TABLE_TEXTURES,
    SceneSpec,
    distractor_specs,
    look_at_quaternion_wxyz,
    object_footprint_radius,
    object_half_height,
)
from vla3d_ros.sim.tasks import sample_positions
from vla3d_ros.types import Observation

if TYPE_CHECKING:
    from vla3d_ros.sim.env import TabletopEnv

LEVELS = (1, 2, 3)


@dataclass(frozen=True)
class CameraRange:
    """Magnitude ranges (low, high) of camera offsets; signs are drawn at random."""

    azimuth_deg: tuple[float, float]
    elevation_deg: tuple[float, float]
    distance_fraction: tuple[float, float]


CAMERA_TRAIN_RANGE = CameraRange((0.0, 5.0), (0.0, 3.0), (0.0, 0.03))
CAMERA_POSE_LEVELS = {
    1: CameraRange((10.0, 15.0), (3.0, 6.0), (0.03, 0.06)),
    2: CameraRange((15.0, 25.0), (6.0, 10.0), (0.06, 0.10)),
    3: CameraRange((25.0, 40.0), (10.0, 15.0), (0.10, 0.15)),
}


def is_training_camera_offset(azimuth_deg: float, elevation_deg: float, distance_fraction: float) -> bool:
    """True iff an orbit offset lies in the training camera distribution (`CAMERA_TRAIN_RANGE`)."""
    r = CAMERA_TRAIN_RANGE
    return (abs(azimuth_deg) <= r.azimuth_deg[1] and abs(elevation_deg) <= r.elevation_deg[1]
            and abs(distance_fraction) <= r.distance_fraction[1])


def _signed(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high) * rng.choice([-1.0, 1.0]))


def _static_camera_ids(env: TabletopEnv) -> list[tuple[str, int]]:
    return [(name, env.model.camera(name).id) for name in env.camera_names if not DEFAULT_CAMERAS[name].on_hand]


def _wxyz_to_matrix(quat_wxyz: np.ndarray) -> np.ndarray:
    w, x, y, z = quat_wxyz
    return quaternion_xyzw_to_matrix(np.array([x, y, z, w]))


def _matrix_to_wxyz(R: np.ndarray) -> np.ndarray:
    x, y, z, w = matrix_to_quaternion_xyzw(R)
    return np.array([w, x, y, z])


@dataclass(frozen=True)
class Perturbation:
    """One perturbation at one severity level; subclasses override the hooks they need."""

    level: int
    name: ClassVar[str] = ""
    dimension: ClassVar[str] = ""
    description: ClassVar[str] = ""
    levels: ClassVar[tuple[int, ...]] = LEVELS

    def __post_init__(self) -> None:
        if self.level not in self.levels:
            raise ValueError(f"perturbation {self.name!r} level must be one of {self.levels}, got {self.level!r}")

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.level}"

    def configure_scene(self, scene: SceneSpec) -> None:
        """Add what must exist in the model (distractors, occluder) before it is compiled."""

    def apply(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        """Change the reset state/model; returns the sampled parameters (JSON-able)."""
        return {}

    def corrupt(self, observation: Observation, rng: np.random.Generator) -> Observation:
        """Change an observation (sensor effects)."""
        return observation


def orbit_eye(camera: str, azimuth_deg: float, elevation_deg: float, distance_fraction: float) -> np.ndarray:
    """(3,) eye of static `camera` orbited about its look-at point by the given offsets."""
    spec = DEFAULT_CAMERAS[camera]
    target = np.array(spec.target)
    offset = np.array(spec.eye) - target
    distance = np.linalg.norm(offset) * (1.0 + distance_fraction)
    azimuth = np.arctan2(offset[1], offset[0]) + np.radians(azimuth_deg)
    elevation = np.clip(np.arcsin(offset[2] / np.linalg.norm(offset)) + np.radians(elevation_deg),
                        np.radians(10), np.radians(80))
    return target + distance * np.array([np.cos(elevation) * np.cos(azimuth),
                                         np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])


def _orbit_cameras(env: TabletopEnv, rng: np.random.Generator, ranges: CameraRange) -> dict:
    params = {}
    for name, camera_id in _static_camera_ids(env):
        d_az = _signed(rng, *ranges.azimuth_deg)
        d_el = _signed(rng, *ranges.elevation_deg)
        d_dist = _signed(rng, *ranges.distance_fraction)
        eye = orbit_eye(name, d_az, d_el, d_dist)
        env.model.cam_pos[camera_id] = eye
        env.model.cam_quat[camera_id] = look_at_quaternion_wxyz(eye, np.array(DEFAULT_CAMERAS[name].target))
        params[name] = {"azimuth_deg": d_az, "elevation_deg": d_el, "distance_fraction": d_dist}
    return params


Bands = tuple[tuple[float, float], ...]   # signed open intervals (low, high) of one parameter


def _symmetric(magnitudes: Bands) -> Bands:
    """Magnitude bands -> the signed intervals of both signs."""
    return tuple(sorted([(-high, -low) for low, high in magnitudes] + list(magnitudes)))


def _band_sample(rng: np.random.Generator, bands: Bands) -> float:
    """A value: an interval drawn uniformly, then a value uniform inside it."""
    low, high = bands[int(rng.integers(len(bands)))]
    return float(rng.uniform(low, high))


def _bands_overlap(a: Bands, b: Bands) -> bool:
    return any(lo_a < hi_b and lo_b < hi_a for lo_a, hi_a in a for lo_b, hi_b in b)


def _outside_box(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """An RGB colour with at least one channel outside [low, high]: never drawn by a box U[low, high]^3."""
    while True:
        rgb = rng.uniform(0.0, 1.0, size=3)
        if np.any((rgb < low) | (rgb > high)):
            return rgb


class CameraPose(Perturbation):
    name = "camera_pose"
    dimension = "camera viewpoint"
    description = "static cameras orbit their look-at point; every level is outside the training range"

    def apply(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        return _orbit_cameras(env, rng, CAMERA_POSE_LEVELS[self.level])


class CameraTrain(Perturbation):
    name = "camera_train"
    dimension = "camera viewpoint (training distribution)"
    description = "small camera jitter within CAMERA_TRAIN_RANGE, for training data"
    levels = (1,)

    def apply(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        return _orbit_cameras(env, rng, CAMERA_TRAIN_RANGE)


class CameraRotation(Perturbation):
    name = "camera_rotation"
    dimension = "camera viewpoint"
    description = "static cameras rotate in place (pan, tilt, roll)"
    magnitude_deg: ClassVar[dict[int, tuple[float, float]]] = {1: (2.0, 4.0), 2: (4.0, 7.0), 3: (7.0, 11.0)}

    def apply(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        params = {}
        for name, camera_id in _static_camera_ids(env):
            pan, tilt, roll = (_signed(rng, *self.magnitude_deg[self.level]) for _ in range(3))
            R_mj = _wxyz_to_matrix(env.model.cam_quat[camera_id])
            # rotate about the camera's own (OpenCV) axes: tilt about x, pan about y, roll about z
            R_local = euler_xyz_to_matrix(np.radians(tilt), np.radians(pan), np.radians(roll))
            flip = np.diag([1.0, -1.0, -1.0])
            R_cv = R_mj @ flip
            env.model.cam_quat[camera_id] = _matrix_to_wxyz(R_cv @ R_local @ flip)
            params[name] = {"pan_deg": pan, "tilt_deg": tilt, "roll_deg": roll}
        return params


class CameraFov(Perturbation):
    name = "camera_fov"
    dimension = "camera viewpoint"
    description = "static cameras' vertical field of view (intrinsics change accordingly)"
    magnitude_deg: ClassVar[dict[int, tuple[float, float]]] = {1: (4.0, 7.0), 2: (7.0, 11.0), 3: (11.0, 16.0)}

    def apply(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        params = {}
        for name, camera_id in _static_camera_ids(env):
            delta = _signed(rng, *self.magnitude_deg[self.level])
            env.model.cam_fovy[camera_id] += delta
            params[name] = {"fovy_delta_deg": delta, "fovy_deg": float(env.model.cam_fovy[camera_id])}
        return params


class RobotInit(Perturbation):
    name = "robot_init"
    dimension = "robot initial state"
    description = "arm joints start uniformly off the home posture"
    magnitude_rad: ClassVar[dict[int, float]] = {1: 0.08, 2: 0.15, 3: 0.25}

    def apply(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        controller = env.controller
        home = env.data.qpos[controller.joint_qpos].copy()
        magnitude = self.magnitude_rad[self.level]
        for _ in range(100):
            q = np.clip(home + rng.uniform(-magnitude, magnitude, size=7), controller.lower, controller.upper)
            env.set_arm_qpos(q)
            mujoco.mj_kinematics(env.model, env.data)
            # keep the gripper above the objects and inside the table's footprint
            tcp = env.data.site_xpos[controller.site_id]
            if tcp[2] > 0.2 and 0.2 < tcp[0] < 0.75:
                break
        return {"arm_qpos": q.tolist()}


class Language(Perturbation):
    name = "language"
    dimension = "language"
    description = "held-out instruction paraphrases (1 synonyms, 2 restructured, 3 chatty)"

    def apply(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        env.instruction = env.task.instruction(env.instance, rng, level=self.level)
        return {"instruction": env.instruction}


class Light(Perturbation):
    name = "light"
    dimension = "light"
    description = "key light direction, intensity and colour; ambient level"
    intensity: ClassVar[dict[int, tuple[float, float]]] = {1: (0.75, 1.25), 2: (0.5, 1.6), 3: (0.3, 2.0)}
    tilt_deg: ClassVar[dict[int, float]] = {1: 15.0, 2: 30.0, 3: 45.0}
    tint: ClassVar[dict[int, float]] = {1: 0.05, 2: 0.15, 3: 0.3}

    def apply(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        scale = float(rng.uniform(*self.intensity[self.level]))
        tint = 1.0 + rng.uniform(-self.tint[self.level], self.tint[self.level], size=3)
        tilt = np.radians(self.tilt_deg[self.level])
        R = euler_xyz_to_matrix(rng.uniform(-tilt, tilt), rng.uniform(-tilt, tilt), rng.uniform(-np.pi, np.pi))
        model = env.model
        model.light_dir[:] = model.light_dir @ R.T
        model.light_diffuse[:] = np.clip(model.light_diffuse * scale * tint, 0.0, 1.0)
        model.vis.headlight.diffuse[:] = np.clip(model.vis.headlight.diffuse * scale * tint, 0.0, 1.0)
        ambient = float(rng.uniform(*self.intensity[self.level]))
        model.vis.headlight.ambient[:] = np.clip(model.vis.headlight.ambient * ambient, 0.0, 1.0)
        return {"intensity": scale, "ambient": ambient, "tint": tint.tolist()}


class Background(Perturbation):
    name = "background"
    dimension = "background / texture"
    description = "table texture (1), + table and wall colours (2), + floor colour and strong tints (3)"

    def apply(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        model = env.model
        table = model.material("table").id
        rgb_role = int(mujoco.mjtTextureRole.mjTEXROLE_RGB)
        current = model.mat_texid[table, rgb_role]
        choices = [model.texture(name).id for name in TABLE_TEXTURES if model.texture(name).id != current]
        texture = int(choices[int(rng.integers(len(choices)))])
        model.mat_texid[table, rgb_role] = texture
        params = {"table_texture": model.texture(texture).name}
        if self.level >= 2:
            strength = 0.3 if self.level == 2 else 0.6
            table_tint = np.clip(1.0 - strength * rng.random(3), 0.0, 1.0)
            model.mat_rgba[table, :3] = table_tint
            wall = rng.uniform(0.2, 0.95, size=3)
            model.mat_rgba[model.material("wall").id, :3] = wall
            params.update(table_tint=table_tint.tolist(), wall_rgb=wall.tolist())
        if self.level >= 3:
            floor = rng.uniform(0.05, 0.9, size=3)
            model.mat_rgba[model.material("floor").id, :3] = floor
            params["floor_rgb"] = floor.tolist()
        return params


class SensorNoise(Perturbation):
    name = "sensor_noise"
    dimension = "sensor noise"
    description = "RGB Gaussian noise; depth noise sigma = k z^2 and holes (NaN) in blobs"
    rgb_sigma: ClassVar[dict[int, float]] = {1: 3.0, 2: 6.0, 3: 12.0}
    depth_k: ClassVar[dict[int, float]] = {1: 0.002, 2: 0.005, 3: 0.01}   # metres at z = 1 m
    hole_fraction: ClassVar[dict[int, float]] = {1: 0.01, 2: 0.03, 3: 0.08}

    def corrupt(self, observation: Observation, rng: np.random.Generator) -> Observation:
        if observation.num_views == 0:
            return observation
        rgb = observation.rgb.astype(np.float32) + rng.normal(0.0, self.rgb_sigma[self.level],
                                                              size=observation.rgb.shape)
        observation.rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        if observation.depth is not None:
            depth = observation.depth.copy()
            depth += (self.depth_k[self.level] * depth ** 2 * rng.standard_normal(depth.shape)).astype(np.float32)
            num_views, height, width = depth.shape
            # holes: square blobs of 1-5 px covering about hole_fraction of the image
            blob_area = 9.0
            num_blobs = int(round(self.hole_fraction[self.level] * height * width / blob_area))
            for view in range(num_views):
                sizes = rng.integers(1, 6, size=num_blobs)
                rows = rng.integers(0, height, size=num_blobs)
                cols = rng.integers(0, width, size=num_blobs)
                for size, row, col in zip(sizes, rows, cols):
                    depth[view, row:row + size, col:col + size] = np.nan
            observation.depth = depth
        return observation


class Layout(Perturbation):
    name = "layout"
    dimension = "layout"
    description = "1/2/3 distractor objects (ball, puck, small cube) among the task objects"

    def configure_scene(self, scene: SceneSpec) -> None:
        scene.num_distractors = max(scene.num_distractors, self.level)

    def apply(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        specs = distractor_specs(self.level)
        occupied = [(*env.object_position(slot)[:2], object_footprint_radius(env.task.spec(slot)))
                    for slot in env.instance.poses]
        positions = sample_positions(rng, [object_footprint_radius(s) for s in specs], occupied,
                                     x_range=(0.32, 0.7), y_range=(-0.3, 0.3), gap=0.03)
        used = {(env.task.spec(slot).kind, name.split()[0]) for slot, name in env.instance.display_names.items()}
        params = []
        for spec, xy in zip(specs, positions):
            # never the colour of a task object of the same shape: the instruction stays unambiguous
            colors = [c for c in COLORS if (spec.kind, c) not in used]
            color = colors[int(rng.integers(len(colors)))]
            used.add((spec.kind, color))
            env.set_object_pose(spec.name, (xy[0], xy[1], object_half_height(spec), float(rng.uniform(-np.pi, np.pi))))
            env.set_object_color(spec.name, COLORS[color])
            env.display_names[spec.name] = f"{color} {spec.kind}"
            params.append({"name": env.display_names[spec.name], "xy": [float(xy[0]), float(xy[1])]})
        return {"distractors": params}


class Occlusion(Perturbation):
    name = "occlusion"
    dimension = "occlusion (extra split)"
    description = "a plate between the front camera and the target; covers 60% / 100% / 160% of its width"
    coverage: ClassVar[dict[int, float]] = {1: 0.6, 2: 1.0, 3: 1.6}
    fraction_from_camera = 0.45

    def configure_scene(self, scene: SceneSpec) -> None:
        scene.occluder = True

    def apply(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        cameras = _static_camera_ids(env)
        if not cameras:
            raise ValueError("occlusion needs a static camera (front or side)")
        name, camera_id = next(((n, i) for n, i in cameras if n == "front"), cameras[0])
        target_slot = env.instance.roles["target"]
        target = env.object_position(target_slot)
        eye = env.data.cam_xpos[camera_id].copy()
        line = target - eye
        distance = np.linalg.norm(line)
        center = eye + self.fraction_from_camera * line
        radius = object_footprint_radius(env.task.spec(target_slot))
        half = self.coverage[self.level] * radius * self.fraction_from_camera
        # partial levels cover one side of the target: shift sideways by the uncovered part
        side = np.cross(line / distance, [0.0, 0.0, 1.0])
        side /= np.linalg.norm(side)
        shift = max(0.0, radius - half / self.fraction_from_camera) * self.fraction_from_camera
        center = center + rng.choice([-1.0, 1.0]) * shift * side
        body = env.model.body("occluder")
        geom = env.model.geom("occluder_geom").id
        env.model.geom_size[geom] = (half, half, 0.003)
        env.model.geom_rbound[geom] = float(np.linalg.norm(env.model.geom_size[geom]))
        mocap = env.model.body_mocapid[body.id]
        env.data.mocap_pos[mocap] = center
        env.data.mocap_quat[mocap] = look_at_quaternion_wxyz(center, center + line)
        return {"camera": name, "center": center.tolist(), "half_size": half}


# ---- the randomised training distribution --------------------------------------------------------
# Signed intervals of every perturbed training parameter (see the module docstring); the nominal
# value itself (0: no change) is the only training value an evaluation level may also draw.
# Each evaluation level's interval lies between the inner (near-nominal) and the outer training
# intervals, or inside none of them.
TRAINING_BANDS: dict[str, Bands] = {
    "camera_azimuth_deg": _symmetric(((0.0, 8.0), (42.0, 50.0))),
    "camera_elevation_deg": _symmetric(((0.0, 2.5), (16.0, 20.0))),
    "camera_distance_fraction": _symmetric(((0.0, 0.025), (0.16, 0.2))),
    "camera_rotation_deg": _symmetric(((0.0, 1.5), (12.0, 14.0))),
    "camera_fovy_deg": _symmetric(((0.0, 3.0), (17.0, 20.0))),
    "robot_init_max_joint_offset_rad": _symmetric(((0.27, 0.35),)),
    "light_tilt_deg": _symmetric(((46.0, 60.0),)),
    "light_intensity_log": ((-1.4, -1.25), (0.75, 0.9)),     # log of the key light's scale
    "light_tint": _symmetric(((0.31, 0.4),)),
    "ambient_log": ((-1.4, -1.25), (0.75, 0.9)),
}
# Colour boxes the `background` suite draws from; training colours lie outside them.
BACKGROUND_COLOUR_BOXES = {"table_tint": (0.4, 1.0), "wall_rgb": (0.2, 0.95), "floor_rgb": (0.05, 0.9)}


def evaluation_bands() -> dict[str, Bands]:
    """The signed intervals the evaluation levels draw each parameter from, keyed like `TRAINING_BANDS`."""
    levels = CAMERA_POSE_LEVELS.values()
    log_scales = tuple((float(np.log(lo)), float(np.log(hi))) for lo, hi in Light.intensity.values())
    return {
        "camera_azimuth_deg": _symmetric(tuple(r.azimuth_deg for r in levels)),
        "camera_elevation_deg": _symmetric(tuple(r.elevation_deg for r in levels)),
        "camera_distance_fraction": _symmetric(tuple(r.distance_fraction for r in levels)),
        "camera_rotation_deg": _symmetric(tuple(CameraRotation.magnitude_deg.values())),
        "camera_fovy_deg": _symmetric(tuple(CameraFov.magnitude_deg.values())),
        "robot_init_max_joint_offset_rad": tuple((-m, m) for m in RobotInit.magnitude_rad.values()),
        "light_tilt_deg": tuple((-t, t) for t in Light.tilt_deg.values()),
        "light_intensity_log": log_scales,
        "light_tint": tuple((-t, t) for t in Light.tint.values()),
        "ambient_log": log_scales,
    }


class TrainingPerturbation(Perturbation):
    """A part of the randomised training distribution: one level, applied with `probability`."""

    levels = (1,)
    probability: ClassVar[float] = 1.0

    def apply(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        if rng.random() >= self.probability:
            return {"applied": False}
        return {"applied": True, **self.randomise(env, rng)}

    def randomise(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        raise NotImplementedError


class CameraWideTrain(TrainingPerturbation):
    name = "camera_wide_train"
    dimension = "camera viewpoint (training distribution)"
    description = "static cameras orbit, rotate and zoom within TRAINING_BANDS (true calibration recorded)"
    probability = 0.8

    def randomise(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        b = TRAINING_BANDS
        params = {}
        for name, camera_id in _static_camera_ids(env):
            target = np.array(DEFAULT_CAMERAS[name].target)
            d_az = _band_sample(rng, b["camera_azimuth_deg"])
            d_el = _band_sample(rng, b["camera_elevation_deg"])
            d_dist = _band_sample(rng, b["camera_distance_fraction"])
            eye = orbit_eye(name, d_az, d_el, d_dist)
            pan, tilt, roll = (_band_sample(rng, b["camera_rotation_deg"]) for _ in range(3))
            R_cv = _wxyz_to_matrix(look_at_quaternion_wxyz(eye, target)) @ np.diag([1.0, -1.0, -1.0])
            R_local = euler_xyz_to_matrix(np.radians(tilt), np.radians(pan), np.radians(roll))
            env.model.cam_pos[camera_id] = eye
            env.model.cam_quat[camera_id] = _matrix_to_wxyz(R_cv @ R_local @ np.diag([1.0, -1.0, -1.0]))
            d_fov = _band_sample(rng, b["camera_fovy_deg"])
            env.model.cam_fovy[camera_id] += d_fov
            params[name] = {"azimuth_deg": d_az, "elevation_deg": d_el, "distance_fraction": d_dist,
                            "pan_deg": pan, "tilt_deg": tilt, "roll_deg": roll, "fovy_delta_deg": d_fov}
        return params


class LightTrain(TrainingPerturbation):
    name = "light_train"
    dimension = "light (training distribution)"
    description = "key light tilted/scaled/tinted beyond the light suite's levels, ambient, a coloured fill light"
    probability = 0.8
    nominal_share: ClassVar[float] = 0.4

    def configure_scene(self, scene: SceneSpec) -> None:
        scene.fill_light = True

    def randomise(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        b = TRAINING_BANDS
        model = env.model
        key = model.light("key").id
        def perturbed(key: str, size: int = 1) -> np.ndarray:
            """Each light parameter is left nominal (0) or drawn from its training intervals."""
            if rng.random() < self.nominal_share:
                return np.zeros(size)
            return np.array([_band_sample(rng, b[key]) for _ in range(size)])

        scale = float(np.exp(perturbed("light_intensity_log")[0]))
        tint = 1.0 + perturbed("light_tint", 3)
        tilt = np.radians(perturbed("light_tilt_deg", 2))
        R = euler_xyz_to_matrix(tilt[0], tilt[1], rng.uniform(-np.pi, np.pi))
        model.light_dir[key] = model.light_dir[key] @ R.T
        model.light_diffuse[key] = np.clip(model.light_diffuse[key] * scale * tint, 0.0, 1.0)
        model.vis.headlight.diffuse[:] = np.clip(model.vis.headlight.diffuse * scale * tint, 0.0, 1.0)
        ambient = float(np.exp(perturbed("ambient_log")[0]))
        model.vis.headlight.ambient[:] = np.clip(model.vis.headlight.ambient * ambient, 0.0, 1.0)
        fill = model.light("fill").id
        position = np.array([rng.uniform(-0.2, 1.1), rng.uniform(-0.8, 0.8), rng.uniform(0.4, 1.5)])
        fill_rgb = rng.uniform(0.0, 0.6, size=3)
        model.light_pos[fill] = position
        model.light_diffuse[fill] = fill_rgb
        return {"intensity": scale, "ambient": ambient, "tint": tint.tolist(), "tilt_deg": np.degrees(tilt).tolist(),
                "fill_pos": position.tolist(), "fill_rgb": fill_rgb.tolist()}


class BackgroundTrain(TrainingPerturbation):
    name = "background_train"
    dimension = "background / texture (training distribution)"
    description = "training-only table textures; table, wall, floor colours outside the background suite's"
    probability = 0.8

    def randomise(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        model = env.model
        table = model.material("table").id
        texture_name = TRAINING_TABLE_TEXTURES[int(rng.integers(len(TRAINING_TABLE_TEXTURES)))]
        model.mat_texid[table, int(mujoco.mjtTextureRole.mjTEXROLE_RGB)] = model.texture(texture_name).id
        colours = {key: _outside_box(rng, *box) for key, box in BACKGROUND_COLOUR_BOXES.items()}
        model.mat_rgba[table, :3] = colours["table_tint"]
        model.mat_rgba[model.material("wall").id, :3] = colours["wall_rgb"]
        model.mat_rgba[model.material("floor").id, :3] = colours["floor_rgb"]
        return {"table_texture": texture_name, **{key: rgb.tolist() for key, rgb in colours.items()}}


class ZonesTrain(TrainingPerturbation):
    name = "zones_train"
    dimension = "target zones (training distribution)"
    description = "each zone gets a random colour (both may match): only the side word tells them apart"

    def randomise(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        params = {}
        for zone in env.scene.zones:
            rgb = rng.uniform(0.1, 0.95, size=3)
            env.model.geom_rgba[env.model.geom(zone.name).id, :3] = rgb
            params[zone.name] = rgb.tolist()
        return params


class RobotInitTrain(TrainingPerturbation):
    name = "robot_init_train"
    dimension = "robot initial state (training distribution)"
    description = "arm joints start off home with the largest offset beyond the robot_init suite's levels"
    probability = 0.5

    def randomise(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        controller = env.controller
        home = env.data.qpos[controller.joint_qpos].copy()
        low, high = TRAINING_BANDS["robot_init_max_joint_offset_rad"][-1]
        for _ in range(200):
            offset = rng.uniform(-high, high, size=7)
            offset[int(rng.integers(7))] = _signed(rng, low, high)   # the largest offset lies in the band
            q = home + offset
            if np.any(q < controller.lower) or np.any(q > controller.upper):
                continue
            env.set_arm_qpos(q)
            mujoco.mj_kinematics(env.model, env.data)
            tcp = env.data.site_xpos[controller.site_id]
            if tcp[2] > 0.2 and 0.2 < tcp[0] < 0.75:
                return {"arm_qpos": q.tolist(), "max_joint_offset_rad": float(np.max(np.abs(offset)))}
        env.set_arm_qpos(home)
        return {"arm_qpos": home.tolist(), "max_joint_offset_rad": 0.0}


# A knocked camera: after it was calibrated, the front camera moves by `translation` (metres, base
# frame) and turns by `rotation_deg` (base-frame x, y, z Euler angles) about its own centre. Level 1
# (3.6 cm / 3.9 deg, down and tilted down) is the knock first measured. Levels 2 (7.9 cm / 7.7 deg)
# and 3 (11.6 cm / 11.5 deg) go up and tilt up instead: level 1's direction at twice its size sinks
# the calibration session's board poses into the table, and the front camera's 55 deg leave little
# room sideways. Up and tilted up add up in the image (a stale calibration misplaces the table top
# by 6, 13 and 18 cm on average at levels 1, 2, 3) while the table, the objects and both zones stay
# in view and the hand can still show the board to the camera.
CAMERA_KNOCK_LEVELS = {
    1: {"camera": "front", "translation": (0.0, 0.03, -0.02), "rotation_deg": (2.0, -3.0, 1.5)},
    2: {"camera": "front", "translation": (0.04, 0.02, 0.065), "rotation_deg": (4.0, 6.0, 3.0)},
    3: {"camera": "front", "translation": (0.05, 0.03, 0.1), "rotation_deg": (8.0, 7.0, 5.0)},
}


def knock(T_base_cam: np.ndarray, level: int) -> np.ndarray:
    """(4, 4) pose of a camera at T_base_cam after the knock of `level` (`CAMERA_KNOCK_LEVELS`)."""
    offset = CAMERA_KNOCK_LEVELS[level]
    return displace_camera(T_base_cam, offset["translation"], euler_xyz_to_matrix(*np.radians(offset["rotation_deg"])))


def nominal_camera_pose(camera: str) -> np.ndarray:
    """(4, 4) T_base_cam (OpenCV axes) of a static camera at its nominal scene pose."""
    spec = DEFAULT_CAMERAS[camera]
    T = np.eye(4)
    T[:3, :3] = _wxyz_to_matrix(look_at_quaternion_wxyz(np.array(spec.eye), np.array(spec.target))) @ np.diag(
        [1.0, -1.0, -1.0])
    T[:3, 3] = spec.eye
    return T


def knock_camera(env: TabletopEnv, level: int) -> None:
    """Move the knocked camera of the env's model by the knock of `level` (from its nominal pose)."""
    camera = CAMERA_KNOCK_LEVELS[level]["camera"]
    camera_id = env.model.camera(camera).id
    T = knock(nominal_camera_pose(camera), level)
    env.model.cam_pos[camera_id] = T[:3, 3]
    env.model.cam_quat[camera_id] = _matrix_to_wxyz(T[:3, :3] @ np.diag([1.0, -1.0, -1.0]))


@lru_cache(maxsize=len(LEVELS))
def recalibrated_knocked_pose(level: int, num_views: int = 12, seed: int = 0) -> np.ndarray:
    """T_base_cam of the camera knocked at `level` as `vla3d calibrate` finds it: the hand shows the
    board to the knocked camera in a calibration scene, intrinsics and hand-eye (eye-to-hand) are
    solved from the images and end-effector poses only. Computed once per process and level."""
    from vla3d_ros.calibration.handeye import HandEyeSample, solve_hand_eye
    from vla3d_ros.calibration.intrinsics import calibrate_intrinsics
    from vla3d_ros.sim.calibration_views import capture_board_views
    from vla3d_ros.sim.env import TabletopEnv
    from vla3d_ros.sim.scene import CALIBRATION_BOARD

    camera = CAMERA_KNOCK_LEVELS[level]["camera"]
    env = TabletopEnv("push_to_zone", image_size=(480, 640), cameras=(camera,), calibration_board="hand")
    try:
        env.reset(seed=seed)
        knock_camera(env, level)
        views = capture_board_views(env, camera, num_views, np.random.default_rng(seed))
    finally:
        env.close()
    detections = [CALIBRATION_BOARD.detect(view.rgb) for view in views]
    intrinsics = calibrate_intrinsics(detections)
    samples = [HandEyeSample(view.T_base_ee, detection) for view, detection in zip(views, detections)]
    return solve_hand_eye(samples, intrinsics.K, intrinsics.distortion, mount="eye_to_hand").X


class CameraKnock(Perturbation):
    """The front camera knocked by `CAMERA_KNOCK_LEVELS[level]`; the observation carries its true new pose."""

    name = "camera_knock"
    dimension = "calibration (extra split)"
    description = ("front camera knocked by 3.6 cm / 3.9 deg, 7.9 cm / 7.7 deg, 11.6 cm / 11.5 deg; "
                   "the policy is told the true new pose")

    @property
    def camera(self) -> str:
        return CAMERA_KNOCK_LEVELS[self.level]["camera"]

    def apply(self, env: TabletopEnv, rng: np.random.Generator) -> dict:
        knock_camera(env, self.level)
        return dict(CAMERA_KNOCK_LEVELS[self.level])

    def reported_pose(self) -> np.ndarray | None:
        """The knocked camera's T_base_cam put in the observation (None = the simulator's truth)."""
        return None

    def corrupt(self, observation: Observation, rng: np.random.Generator) -> Observation:
        reported = self.reported_pose()
        if reported is not None and self.camera in observation.camera_names:
            T_base_cam = observation.T_base_cam.copy()
            T_base_cam[observation.camera_names.index(self.camera)] = reported
            observation.T_base_cam = T_base_cam
        return observation


class CameraKnockStale(CameraKnock):
    name = "camera_knock_stale"
    description = "front camera knocked; the policy is told the pose from before the knock"

    def reported_pose(self) -> np.ndarray | None:
        return nominal_camera_pose(self.camera)


class CameraKnockRecalibrated(CameraKnock):
    name = "camera_knock_recalibrated"
    description = "front camera knocked; the policy is told the pose vla3d calibrate recovers in the simulator"

    def reported_pose(self) -> np.ndarray | None:
        return recalibrated_knocked_pose(self.level)


TRAINING_PERTURBATIONS = (CameraTrain, CameraWideTrain, LightTrain, BackgroundTrain, ZonesTrain, RobotInitTrain)
# Calibration splits: a knocked camera and the calibration the policy is told; run by name, outside `all`.
CALIBRATION_SPLITS = (CameraKnock, CameraKnockStale, CameraKnockRecalibrated)
PERTURBATIONS: dict[str, type[Perturbation]] = {
    cls.name: cls for cls in (CameraPose, CameraRotation, CameraFov, RobotInit, Language, Light, Background,
                              SensorNoise, Layout, Occlusion, *TRAINING_PERTURBATIONS, *CALIBRATION_SPLITS)
}


def parse_perturbation(text: str) -> Perturbation:
    """"name:level" (or "name", meaning level 1) -> Perturbation."""
    name, _, level_text = text.partition(":")
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r} in {text!r}; choose from {sorted(PERTURBATIONS)}")
    try:
        level = int(level_text) if level_text else 1
    except ValueError:
        raise ValueError(f"perturbation level must be an integer, got {level_text!r} in {text!r}") from None
    return PERTURBATIONS[name](level)


def parse_perturbations(texts) -> tuple[Perturbation, ...]:
    return tuple(parse_perturbation(text) for text in texts)
