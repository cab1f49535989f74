"""`TabletopEnv`: the MuJoCo proving ground (Panda + table + task objects + calibrated RGB-D cameras).

Control: 10 Hz (`control_period` = 0.1 s), 50 physics substeps of 2 ms per control step; the
action is `types.EE_DELTA_ACTION_NAMES` executed by `controller.DifferentialIKController`
(translation clipped to 0.02 m per axis, rotation to 0.1 rad per axis, gripper target in [0, 1],
1 = open).

Observation (`types.Observation`): joint positions (9: 7 arm + 2 fingers), tool-centre-point pose
(x, y, z, qx, qy, qz, qw) in the base frame (= world frame), gripper opening in [0, 1], and per camera
RGB (V, H, W, 3) uint8, depth (V, H, W) float32 metres (NaN = invalid), K (V, 3, 3) and
T_base_cam (V, 4, 4) in the OpenCV convention, read from the live model so camera perturbations
show up in the calibration. `segmentation()` gives the matching instance-id images.

Determinism: `reset(seed)` fully determines the episode (layout, colours, instruction,
perturbation samples, sensor noise); MuJoCo is deterministic on one machine.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

from vla3d_ros.calibration.arm_check import ArmSurface, SurfaceSamples, primitive_surface
from vla3d_ros.geometry import matrix_to_quaternion_xyzw, quaternion_xyzw_to_matrix
from vla3d_ros.sim.controller import DifferentialIKController
from vla3d_ros.sim.perturbations import Perturbation
from vla3d_ros.sim.rendering import MultiCameraRenderer
from vla3d_ros.sim.scene import (
    FINGER_TRAVEL,
    HOME_ARM_QPOS,
    JOINT_NAMES,
    SceneSpec,
    build_mjcf,
    distractor_specs,
    scene_assets,
)
from vla3d_ros.sim.tasks import Task, TaskInstance, get_task
from vla3d_ros.types import Observation

CONTROL_PERIOD = 0.1
SUBSTEPS = 50
SETTLE_SUBSTEPS = 100


def _unique(perturbations: Sequence[Perturbation]) -> tuple[Perturbation, ...]:
    names = [p.name for p in perturbations]
    if len(set(names)) != len(names):
        raise ValueError(f"each perturbation may be given once, got {[p.spec for p in perturbations]}")
    return tuple(perturbations)


@dataclass
class _NominalModel:
    """Model arrays perturbations may change; restored at every reset so nothing accumulates."""

    cam_pos: np.ndarray
    cam_quat: np.ndarray
    cam_fovy: np.ndarray
    light_pos: np.ndarray
    light_dir: np.ndarray
    light_diffuse: np.ndarray
    light_ambient: np.ndarray
    headlight_ambient: np.ndarray
    headlight_diffuse: np.ndarray
    mat_texid: np.ndarray
    mat_rgba: np.ndarray
    geom_rgba: np.ndarray

    @classmethod
    def capture(cls, model: mujoco.MjModel) -> _NominalModel:
        return cls(model.cam_pos.copy(), model.cam_quat.copy(), model.cam_fovy.copy(),
                   model.light_pos.copy(), model.light_dir.copy(), model.light_diffuse.copy(),
                   model.light_ambient.copy(), model.vis.headlight.ambient.copy(),
                   model.vis.headlight.diffuse.copy(), model.mat_texid.copy(), model.mat_rgba.copy(),
                   model.geom_rgba.copy())

    def restore(self, model: mujoco.MjModel) -> None:
        model.cam_pos[:] = self.cam_pos
        model.cam_quat[:] = self.cam_quat
        model.cam_fovy[:] = self.cam_fovy
        model.light_pos[:] = self.light_pos
        model.light_dir[:] = self.light_dir
        model.light_diffuse[:] = self.light_diffuse
        model.light_ambient[:] = self.light_ambient
        model.vis.headlight.ambient[:] = self.headlight_ambient
        model.vis.headlight.diffuse[:] = self.headlight_diffuse
        model.mat_texid[:] = self.mat_texid
        model.mat_rgba[:] = self.mat_rgba
        model.geom_rgba[:] = self.geom_rgba


class TabletopEnv:
    """See the module docstring. `image_size` is (height, width); `calibration_board` adds the
    ChArUco board held by the hand ("hand") or lying on the table ("table"), see `scene.py`."""

    def __init__(self, task: str, *, image_size: tuple[int, int] = (128, 128),
                 cameras: Sequence[str] = ("front", "side", "wrist"),
                 perturbations: Sequence[Perturbation] = (), seed: int = 0,
                 calibration_board: str | None = None) -> None:
        self.task: Task = get_task(task)
        self.task_name = task
        if len(image_size) != 2 or min(image_size) < 8:
            raise ValueError(f"image_size must be (height, width) >= 8, got {image_size}")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.camera_names = tuple(cameras)
        self.perturbations = _unique(perturbations)
        self.control_period = CONTROL_PERIOD

        self.scene = SceneSpec(objects=self.task.objects(), zones=self.task.zones(), cameras=self.camera_names,
                               offscreen_size=(max(640, self.image_size[1]), max(480, self.image_size[0])),
                               calibration_board=calibration_board)
        for perturbation in self.perturbations:
            perturbation.configure_scene(self.scene)
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(self.scene), assets=scene_assets(self.scene))
        self.data = mujoco.MjData(self.model)
        self.controller = DifferentialIKController(self.model)
        self.object_slots = [obj.name for obj in self.scene.objects] + [
            obj.name for obj in distractor_specs(self.scene.num_distractors)]
        self._object_qpos = {slot: self.model.joint(f"{slot}_joint").qposadr[0] for slot in self.object_slots}
        self._object_body = {slot: self.model.body(slot).id for slot in self.object_slots}
        geom_instance = np.zeros(self.model.ngeom, np.int32)
        for index, slot in enumerate(self.object_slots):
            geom_instance[self.model.geom_bodyid == self._object_body[slot]] = index + 1
        self.geom_instance = geom_instance
        self._finger_bodies = {self.model.body("left_finger").id, self.model.body("right_finger").id}
        self._arm_bodies = [int(b) for b in np.flatnonzero(self.model.body_rootid == self.model.body("link0").id)]
        self._joint_qpos = np.array([self.model.joint(name).qposadr[0] for name in JOINT_NAMES])
        self._nominal = _NominalModel.capture(self.model)
        self.renderer = MultiCameraRenderer(self.model, self.camera_names, self.image_size[1],
                                            self.image_size[0], geom_instance)
        self._seed_sequence = np.random.SeedSequence(seed)
        self.instance: TaskInstance | None = None
        self.instruction = ""
        self.display_names: dict[str, str] = {}
        self.episode_seed: int | None = None
        self.perturbation_params: dict[str, dict] = {}
        self._noise_rng = np.random.default_rng(0)
        self._segmentation: np.ndarray | None = None
        self.num_steps = 0

    def set_perturbations(self, perturbations: Sequence[Perturbation]) -> None:
        """Swap the perturbations used from the next reset on, without rebuilding the model.

        Allowed when the model already holds what they need (e.g. as many distractors), which is
        the case for any subset of the levels it was built with; otherwise build a new env.
        """
        perturbations = _unique(perturbations)
        needed = SceneSpec(objects=self.scene.objects, zones=self.scene.zones, cameras=self.scene.cameras)
        for perturbation in perturbations:
            perturbation.configure_scene(needed)
        if (needed.num_distractors > self.scene.num_distractors or (needed.occluder and not self.scene.occluder)
                or (needed.fill_light and not self.scene.fill_light)):
            raise ValueError(f"perturbations {[p.spec for p in perturbations]} need a scene with "
                             f"{needed.num_distractors} distractors, occluder={needed.occluder} and "
                             f"fill_light={needed.fill_light}; this env has {self.scene.num_distractors}, "
                             f"occluder={self.scene.occluder} and fill_light={self.scene.fill_light}: build a new env")
        self.perturbations = perturbations

    # ---- episode --------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, *, render: bool = True, goal_variant: int | None = None) -> Observation:
        """Start an episode; the same `seed` gives the same episode. None draws the next seed.

        `goal_variant` k replaces the sampled goal by the k-th of `task.goal_variants` on the same
        layout (same objects, poses, colours, camera perturbations and instruction template).
        """
        if seed is None:
            seed = int(self._seed_sequence.spawn(1)[0].generate_state(1)[0])
        self.episode_seed = int(seed)
        task_rng, instruction_rng, noise_rng = (
            np.random.default_rng(child) for child in np.random.SeedSequence(self.episode_seed).spawn(3))
        # keyed by name: a perturbation samples the same values whatever else is combined with it
        perturbation_rngs = [np.random.default_rng([self.episode_seed, zlib.crc32(p.name.encode())])
                             for p in self.perturbations]
        self._noise_rng = noise_rng
        self._nominal.restore(self.model)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._joint_qpos[:7]] = HOME_ARM_QPOS
        self.data.qpos[self._joint_qpos[7:]] = FINGER_TRAVEL

        self.instance = self.task.sample(task_rng)
        if goal_variant is not None:
            variants = self.task.goal_variants(self.instance)
            if not 0 <= goal_variant < len(variants):
                raise ValueError(f"goal_variant must be in [0, {len(variants)}) for task {self.task.name!r}, "
                                 f"got {goal_variant}")
            self.instance = variants[goal_variant]
        self.park_objects()   # every slot parked until placed
        for slot, pose in self.instance.poses.items():
            self.set_object_pose(slot, pose)
            self.set_object_color(slot, self.instance.colors[slot])
        self.display_names = dict(self.instance.display_names)
        self.instruction = self.task.instruction(self.instance, instruction_rng)
        mujoco.mj_forward(self.model, self.data)
        self.perturbation_params = {}
        for perturbation, rng in zip(self.perturbations, perturbation_rngs):
            self.perturbation_params[perturbation.spec] = perturbation.apply(self, rng)
            mujoco.mj_forward(self.model, self.data)

        self.controller.hold(self.data, gripper=1.0)
        for _ in range(SETTLE_SUBSTEPS):
            mujoco.mj_step(self.model, self.data)
        self.data.time = 0.0
        self.num_steps = 0
        return self.observe(render=render)

    def step(self, action: np.ndarray, *, render: bool = True) -> Observation:
        """Execute one control step of the (7,) EE-delta action; see the module docstring."""
        if self.instance is None:
            raise RuntimeError("call reset() before step()")
        clipped = self.controller.clip(action)
        q_start, q_goal, gripper = self.controller.targets(self.data, clipped)
        for substep in range(SUBSTEPS):
            self.controller.apply(self.data, q_start, q_goal, gripper, (substep + 1) / SUBSTEPS)
            mujoco.mj_step(self.model, self.data)
        self.num_steps += 1
        return self.observe(render=render)

    def observe(self, *, render: bool = True) -> Observation:
        """The current observation; with render=False it has no camera views (V = 0)."""
        mujoco.mj_forward(self.model, self.data)
        height, width = self.image_size
        if render:
            rgb, depth, segmentation = self.renderer.render(self.data)
            K, T = self.renderer.calibration(self.data)
            names = self.camera_names
        else:
            rgb = np.zeros((0, height, width, 3), np.uint8)
            depth = np.zeros((0, height, width), np.float32)
            segmentation = np.zeros((0, height, width), np.int32)
            K, T = np.zeros((0, 3, 3)), np.zeros((0, 4, 4))
            names = ()
        self._segmentation = segmentation
        observation = Observation(
            camera_names=names, rgb=rgb, depth=depth, intrinsics=K, T_base_cam=T,
            joint_positions=self.data.qpos[self._joint_qpos].astype(np.float32),
            ee_pose=self.ee_pose().astype(np.float32), gripper=self.gripper_opening(),
            instruction=self.instruction, stamp=float(self.data.time), joint_names=JOINT_NAMES)
        for perturbation in self.perturbations:
            observation = perturbation.corrupt(observation, self._noise_rng)
        return observation

    def success(self) -> bool:
        if self.instance is None:
            raise RuntimeError("call reset() before success()")
        return self.task.success(self, self.instance)

    def segmentation(self) -> np.ndarray:
        """(V, H, W) int32 instance ids of the last observation; 0 = background/robot/table."""
        if self._segmentation is None:
            raise RuntimeError("call reset() before segmentation()")
        return self._segmentation

    def object_ids(self) -> dict[str, int]:
        """Display name (e.g. "red cube") -> instance id in `segmentation()`, objects in the scene."""
        return {self.display_names[slot]: index + 1 for index, slot in enumerate(self.object_slots)
                if slot in self.display_names}

    def close(self) -> None:
        self.renderer.close()

    # ---- privileged state (experts, success detectors, perturbations) -------------------------------
    def ee_pose(self) -> np.ndarray:
        """(7,) float64 x, y, z, qx, qy, qz, qw of the tool centre point."""
        site = self.controller.site_id
        rotation = self.data.site_xmat[site].reshape(3, 3)
        return np.concatenate([self.data.site_xpos[site], matrix_to_quaternion_xyzw(rotation)])

    def ee_rotation(self) -> np.ndarray:
        return self.data.site_xmat[self.controller.site_id].reshape(3, 3).copy()

    def gripper_opening(self) -> float:
        fingers = self.data.qpos[self._joint_qpos[7:]]
        return float(np.clip(np.mean(fingers) / FINGER_TRAVEL, 0.0, 1.0))

    def object_position(self, slot: str) -> np.ndarray:
        address = self._object_qpos[slot]
        return self.data.qpos[address:address + 3].copy()

    def object_yaw(self, slot: str) -> float:
        address = self._object_qpos[slot]
        w, x, y, z = self.data.qpos[address + 3:address + 7]
        return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))

    def set_object_pose(self, slot: str, pose: tuple[float, float, float, float]) -> None:
        x, y, z, yaw = pose
        address = self._object_qpos[slot]
        self.data.qpos[address:address + 3] = (x, y, z)
        self.data.qpos[address + 3:address + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        dof = self.model.joint(f"{slot}_joint").dofadr[0]
        self.data.qvel[dof:dof + 6] = 0.0

    def park_objects(self) -> None:
        """Move every object off the table (calibration views want the board unoccluded)."""
        for slot in self.object_slots:
            self._park(slot)

    def _park(self, slot: str) -> None:
        index = self.object_slots.index(slot)
        self.set_object_pose(slot, (0.0, 2.0 + 0.3 * index, -0.5, 0.0))

    def set_object_color(self, slot: str, rgb: Sequence[float]) -> None:
        self.model.geom_rgba[self.model.geom_bodyid == self._object_body[slot], :3] = rgb

    def gripper_touches(self, slot: str) -> bool:
        """True while either finger is in contact with the object."""
        count = self.data.ncon
        body1 = self.model.geom_bodyid[self.data.contact.geom1[:count]]
        body2 = self.model.geom_bodyid[self.data.contact.geom2[:count]]
        fingers = list(self._finger_bodies)
        slot_body = self._object_body[slot]
        touching = ((body1 == slot_body) & np.isin(body2, fingers)) | ((body2 == slot_body) & np.isin(body1, fingers))
        return bool(np.any(touching))

    def arm_surface(self, spacing: float) -> ArmSurface:
        """The arm's surface (`calibration.arm_check`): samples `spacing` metres apart on the
        primitive geoms of the robot's bodies (link0, the mount link, to the fingers; not a held
        calibration board), in their body frames; `arm_link_poses` places them."""
        kinds = {mujoco.mjtGeom.mjGEOM_BOX: "box", mujoco.mjtGeom.mjGEOM_SPHERE: "sphere",
                 mujoco.mjtGeom.mjGEOM_CYLINDER: "cylinder", mujoco.mjtGeom.mjGEOM_CAPSULE: "capsule"}
        links: dict[str, list[SurfaceSamples]] = {}
        for geom in range(self.model.ngeom):
            body = int(self.model.geom_bodyid[geom])
            if body not in self._arm_bodies or self.model.geom(geom).name == "calibration_board":
                continue
            T = np.eye(4)
            T[:3, :3] = quaternion_xyzw_to_matrix(np.roll(self.model.geom_quat[geom], -1))
            T[:3, 3] = self.model.geom_pos[geom]
            kind = kinds[mujoco.mjtGeom(self.model.geom_type[geom])]
            samples = primitive_surface(kind, self.model.geom_size[geom], spacing).transformed(T)
            links.setdefault(self.model.body(body).name, []).append(samples)
        return ArmSurface({name: SurfaceSamples.concatenate(parts) for name, parts in links.items()}, "link0")

    def arm_link_poses(self) -> dict[str, np.ndarray]:
        """Body name -> (4, 4) T_base_body of the robot's bodies now (what TF gives on a robot)."""
        poses = {}
        for body in self._arm_bodies:
            T = np.eye(4)
            T[:3, :3] = self.data.xmat[body].reshape(3, 3)
            T[:3, 3] = self.data.xpos[body]
            poses[self.model.body(body).name] = T
        return poses

    def set_arm_qpos(self, qpos: np.ndarray) -> None:
        self.data.qpos[self._joint_qpos[:7]] = qpos
