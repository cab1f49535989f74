"""MJCF of the tabletop scene: a Franka Panda arm with its parallel gripper, a table, task objects.

The world frame IS the robot base frame (the Panda's link0 sits at the origin on the table top,
z up, x pointing away from the robot across the table), so every pose the simulator reports is
already in the base frame the policy uses.

The arm: kinematic chain (joint frames, axes, limits), inertial parameters, joint position
servo gains and the keyframe are those of the Franka Emika Panda as published in MuJoCo Menagerie
(`franka_emika_panda/panda.xml`, Apache-2.0, (c) DeepMind / Franka Emika data). We ship no meshes:
each link is modelled with capsules and boxes around its kinematic segment, and the hand and
fingers keep the real dimensions (finger travel 0-40 mm, fingertip pads 58-110 mm below the
flange), so grasps are geometrically those of a Panda. Links carry gravity compensation, as the
real arm's torque controller does, so the joint servos track without sag, and the servos' damping
is kp/20 instead of Menagerie's kp/10 (time constant 50 ms instead of 100 ms) so the arm follows
10 Hz commands within a control period.

Scene composition is described by a `SceneSpec` (which objects, how many distractors, whether an
occluder exists) because MuJoCo models are static: everything that may appear in an episode exists
in the model, and per-episode variation (poses, colours, camera poses, lights, textures) is set on
the compiled model at reset.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from vla3d_ros.calibration.board import CharucoBoardSpec
from vla3d_ros.geometry import matrix_to_quaternion_xyzw

# ---- robot constants (Panda) -----------------------------------------------------------------
ARM_JOINT_NAMES = tuple(f"joint{i}" for i in range(1, 8))
FINGER_JOINT_NAMES = ("finger_joint1", "finger_joint2")
JOINT_NAMES = ARM_JOINT_NAMES + FINGER_JOINT_NAMES
HOME_ARM_QPOS = np.array([0.0, 0.0, 0.0, -1.57079, 0.0, 1.57079, -0.7853])
FINGER_TRAVEL = 0.04          # metres per finger, fully open
TCP_OFFSET = 0.1034           # tool centre point below the hand frame: middle of the finger pads
EE_SITE = "tcp"

# ---- table / workspace -------------------------------------------------------------------------
TABLE_X_RANGE = (-0.35, 1.05)
TABLE_Y_RANGE = (-0.75, 0.75)
TABLE_THICKNESS = 0.05

# Named colours used both for rendering and in instructions.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.12),
    "green": (0.15, 0.7, 0.2),
    "blue": (0.15, 0.3, 0.9),
    "yellow": (0.95, 0.85, 0.1),
    "purple": (0.6, 0.2, 0.75),
    "orange": (1.0, 0.5, 0.05),
}


@dataclass(frozen=True)
class ObjectSpec:
    """A free rigid object. `kind` is one of "cube", "can", "ball", "puck", "bowl"."""

    name: str              # body name in the model; also its slot for instance ids
    kind: str
    size: tuple[float, ...]  # cube: (half,), can/puck: (radius, half_height), ball: (radius,),
                             # bowl: (inner radius, wall height)
    mass: float = 0.05

    def __post_init__(self) -> None:
        if self.kind not in _OBJECT_BUILDERS:
            raise ValueError(f"unknown object kind {self.kind!r}; choose from {sorted(_OBJECT_BUILDERS)}")


@dataclass(frozen=True)
class ZoneSpec:
    """A flat coloured target area on the table (visual only): centre (x, y), half sizes (hx, hy)."""

    name: str
    center: tuple[float, float]
    half_size: tuple[float, float]
    rgba: tuple[float, float, float, float]


@dataclass(frozen=True)
class CameraSpec:
    """A camera given as eye/target (static cameras, in the base frame) or as a pose on the hand."""

    name: str
    fovy: float
    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    on_hand: bool = False   # eye/target are then in the hand frame


DEFAULT_CAMERAS: dict[str, CameraSpec] = {
    "front": CameraSpec("front", 55.0, eye=(1.05, 0.0, 0.52), target=(0.5, 0.0, 0.1)),
    "side": CameraSpec("side", 55.0, eye=(0.5, -0.72, 0.45), target=(0.5, 0.0, 0.08)),
    # Looks along the fingers from behind the palm, offset to the hand's x side so the fingers
    # frame the image instead of filling it.
    "wrist": CameraSpec("wrist", 70.0, eye=(0.06, 0.0, 0.06), target=(0.0, 0.0, 0.2), on_hand=True),
}


# ---- calibration board ---------------------------------------------------------------------------
# A printed ChArUco board (OpenCV's image as the texture of a 2 mm plate), either held by the hand
# for the fixed cameras (eye-to-hand) or lying on the table for the wrist camera (eye-in-hand).
CALIBRATION_BOARD = CharucoBoardSpec(squares_x=5, squares_y=7, square_length=0.03, marker_length=0.022)
CALIBRATION_BOARD_MOUNTS = ("hand", "table")
BOARD_HALF_THICKNESS = 0.001
BOARD_TEXTURE_FILE = "charuco_board.png"
# On the hand: beside the fingers, printed side facing the hand's +x, clear of the links.
_BOARD_ON_HAND_POS = (0.07, 0.0, 0.10)
_BOARD_ON_HAND_QUAT = (0.5, 0.5, 0.5, 0.5)   # geom z (the printed normal) = hand x
# On the table: printed side up, in front of the robot where the wrist camera looks down.
_BOARD_ON_TABLE_POS = (0.5, 0.0, BOARD_HALF_THICKNESS)


def board_geom_to_board() -> np.ndarray:
    """(4, 4) T_geom_board: the board frame (OpenCV's, see calibration.board) in the plate geom's frame.

    MuJoCo maps a 2D texture on a box's +z face with the image's top row at +y: the board origin is
    the (-x, +y) corner of that face, board x = geom x, board y = -geom y, board z = -geom z.
    """
    width, height = CALIBRATION_BOARD.size
    T = np.diag([1.0, -1.0, -1.0, 1.0])
    T[:3, 3] = (-width / 2, height / 2, BOARD_HALF_THICKNESS)
    return T


def scene_assets(spec: SceneSpec) -> dict[str, bytes]:
    """Files the MJCF refers to (name -> bytes), generated when the model is built."""
    if spec.calibration_board is None:
        return {}
    ok, png = cv2.imencode(".png", CALIBRATION_BOARD.image(pixels_per_square=64))
    if not ok:
        raise RuntimeError("OpenCV could not encode the ChArUco board texture")
    return {BOARD_TEXTURE_FILE: png.tobytes()}


def _board_geom_xml(spec: SceneSpec, mount: str) -> str:
    if spec.calibration_board != mount:
        return ""
    width, height = CALIBRATION_BOARD.size
    pose = (f'pos="{_fmt(_BOARD_ON_HAND_POS)}" quat="{_fmt(_BOARD_ON_HAND_QUAT)}"' if mount == "hand"
            else f'pos="{_fmt(_BOARD_ON_TABLE_POS)}"')
    return (f'<geom name="calibration_board" type="box" size="{width / 2} {height / 2} {BOARD_HALF_THICKNESS}" '
            f'{pose} material="calibration_board" contype="0" conaffinity="0" group="2"/>')


@dataclass
class SceneSpec:
    objects: list[ObjectSpec]
    zones: list[ZoneSpec] = field(default_factory=list)
    cameras: tuple[str, ...] = ("front", "side", "wrist")
    num_distractors: int = 0
    occluder: bool = False
    fill_light: bool = False      # a movable coloured point light (training light randomisation)
    offscreen_size: tuple[int, int] = (640, 480)
    calibration_board: str | None = None   # None, "hand" or "table" (CALIBRATION_BOARD_MOUNTS)

    def __post_init__(self) -> None:
        if self.calibration_board not in (None, *CALIBRATION_BOARD_MOUNTS):
            raise ValueError(f"calibration_board must be None or one of {CALIBRATION_BOARD_MOUNTS}, "
                             f"got {self.calibration_board!r}")
        unknown = [name for name in self.cameras if name not in DEFAULT_CAMERAS]
        if unknown:
            raise ValueError(f"unknown cameras {unknown}; choose from {sorted(DEFAULT_CAMERAS)}")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"duplicate camera names in {self.cameras}")
        if self.num_distractors < 0:
            raise ValueError(f"num_distractors must be >= 0, got {self.num_distractors}")


DISTRACTOR_KINDS = (("ball", (0.025,)), ("puck", (0.035, 0.015)), ("cube", (0.018,)))


def distractor_specs(count: int) -> list[ObjectSpec]:
    """Distractor objects, cycling through shapes unlike the task objects' sizes."""
    return [
        ObjectSpec(f"distractor{i}", *DISTRACTOR_KINDS[i % len(DISTRACTOR_KINDS)], mass=0.03)
        for i in range(count)
    ]


def look_at_quaternion_wxyz(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """MuJoCo camera orientation (w, x, y, z) looking from `eye` at `target`.

    MuJoCo cameras look along their -z axis with +y up; OpenCV's is z forward, y down, so
    R_mujoco = R_opencv @ diag(1, -1, -1).
    """
    forward = np.asarray(target, float) - np.asarray(eye, float)
    forward /= np.linalg.norm(forward)
    up = np.asarray(up, float)
    if abs(forward @ up) > 0.99:  # looking straight along `up`: pick another reference
        up = np.array([1.0, 0.0, 0.0])
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R_cv = np.stack([right, down, forward], axis=1)
    R_mj = R_cv @ np.diag([1.0, -1.0, -1.0])
    x, y, z, w = matrix_to_quaternion_xyzw(R_mj)
    return np.array([w, x, y, z])


def _fmt(values) -> str:
    return " ".join(f"{v:.6g}" for v in np.ravel(values))


def _camera_xml(spec: CameraSpec) -> str:
    quat = look_at_quaternion_wxyz(np.array(spec.eye), np.array(spec.target),
                                   up=(1.0, 0.0, 0.0) if spec.on_hand else (0.0, 0.0, 1.0))
    return (f'<camera name="{spec.name}" mode="fixed" fovy="{spec.fovy}" '
            f'pos="{_fmt(spec.eye)}" quat="{_fmt(quat)}"/>')


def _robot_xml(wrist_camera: str, hand_extras: str = "") -> str:
    """The Panda chain (Menagerie kinematics/inertias) with primitive link geometry."""
    return f"""
    <body name="link0" childclass="panda">
      <inertial mass="0.629769" pos="-0.041018 -0.00014 0.049974"
          fullinertia="0.00315 0.00388 0.004285 8.2904e-7 0.00015 8.2299e-6"/>
      <geom class="arm" type="cylinder" size="0.075 0.07" pos="-0.03 0 0.07" material="robot_white"/>
      <geom class="arm" type="box" size="0.1 0.09 0.01" pos="-0.05 0 0.01" material="robot_dark"/>
      <body name="link1" pos="0 0 0.333" gravcomp="1">
        <inertial mass="4.970684" pos="0.003875 0.002081 -0.04762"
            fullinertia="0.70337 0.70661 0.0091170 -0.00013900 0.0067720 0.019169"/>
        <joint name="joint1"/>
        <geom class="arm" type="capsule" fromto="0 0 -0.19 0 0 -0.03" size="0.06" material="robot_white"/>
        <body name="link2" quat="1 -1 0 0" gravcomp="1">
          <inertial mass="0.646926" pos="-0.003141 -0.02872 0.003495"
              fullinertia="0.0079620 2.8110e-2 2.5995e-2 -3.925e-3 1.0254e-2 7.04e-4"/>
          <joint name="joint2" range="-1.7628 1.7628"/>
          <geom class="arm" type="cylinder" size="0.06 0.06" material="robot_white"/>
          <geom class="arm" type="capsule" fromto="0 0 0 0 -0.15 0" size="0.055" material="robot_white"/>
          <body name="link3" pos="0 -0.316 0" quat="1 1 0 0" gravcomp="1">
            <inertial mass="3.228604" pos="2.7518e-2 3.9252e-2 -6.6502e-2"
                fullinertia="3.7242e-2 3.6155e-2 1.083e-2 -4.761e-3 -1.1396e-2 -1.2805e-2"/>
            <joint name="joint3"/>
            <geom class="arm" type="capsule" fromto="0 0 -0.16 0 0 -0.02" size="0.055" material="robot_white"/>
            <geom class="arm" type="capsule" fromto="0 0 0 0.0825 0 0" size="0.055" material="robot_white"/>
            <body name="link4" pos="0.0825 0 0" quat="1 1 0 0" gravcomp="1">
              <inertial mass="3.587895" pos="-5.317e-2 1.04419e-1 2.7454e-2"
                  fullinertia="2.5853e-2 1.9552e-2 2.8323e-2 7.796e-3 -1.332e-3 8.641e-3"/>
              <joint name="joint4" range="-3.0718 -0.0698"/>
              <geom class="arm" type="cylinder" size="0.058 0.06" material="robot_dark"/>
              <geom class="arm" type="capsule" fromto="0 0 0 -0.0825 0.09 0" size="0.055" material="robot_white"/>
              <geom class="arm" type="capsule" fromto="-0.0825 0.09 0 -0.0825 0.25 0" size="0.05" material="robot_white"/>
              <body name="link5" pos="-0.0825 0.384 0" quat="1 -1 0 0" gravcomp="1">
                <inertial mass="1.225946" pos="-1.1953e-2 4.1065e-2 -3.8437e-2"
                    fullinertia="3.5549e-2 2.9474e-2 8.627e-3 -2.117e-3 -4.037e-3 2.29e-4"/>
                <joint name="joint5"/>
                <geom class="arm" type="capsule" fromto="0 0 -0.12 0 0 -0.03" size="0.045" material="robot_white"/>
                <geom class="arm" type="cylinder" size="0.05 0.04" material="robot_white"/>
                <body name="link6" quat="1 1 0 0" gravcomp="1">
                  <inertial mass="1.666555" pos="6.0149e-2 -1.4117e-2 -1.0517e-2"
                      fullinertia="1.964e-3 4.354e-3 5.433e-3 1.09e-4 -1.158e-3 3.41e-4"/>
                  <joint name="joint6" range="-0.0175 3.7525"/>
                  <geom class="arm" type="cylinder" size="0.05 0.045" material="robot_dark"/>
                  <geom class="arm" type="capsule" fromto="0 0 0 0.088 0 0" size="0.045" material="robot_white"/>
                  <body name="link7" pos="0.088 0 0" quat="1 1 0 0" gravcomp="1">
                    <inertial mass="7.35522e-01" pos="1.0517e-2 -4.252e-3 6.1597e-2"
                        fullinertia="1.2516e-2 1.0027e-2 4.815e-3 -4.28e-4 -1.196e-3 -7.41e-4"/>
                    <joint name="joint7"/>
                    <geom class="arm" type="cylinder" size="0.045 0.045" pos="0 0 0.05" material="robot_white"/>
                    <geom class="arm" type="cylinder" size="0.04 0.008" pos="0 0 0.099" material="robot_dark"/>
                    <body name="hand" pos="0 0 0.107" quat="0.9238795 0 0 -0.3826834" gravcomp="1">
                      <inertial mass="0.73" pos="-0.01 0 0.03" diaginertia="0.001 0.0025 0.0017"/>
                      <geom class="arm" type="box" size="0.022 0.1 0.025" pos="0 0 0.03" material="robot_white"/>
                      <geom class="arm" type="cylinder" size="0.035 0.01" pos="0 0 0.005" material="robot_dark"/>
                      <site name="{EE_SITE}" pos="0 0 {TCP_OFFSET}" size="0.005" rgba="1 0 0 0" group="4"/>
                      {wrist_camera}
                      {hand_extras}
                      <body name="left_finger" pos="0 0 0.0584" gravcomp="1">
                        <inertial mass="0.015" pos="0 0 0" diaginertia="2.375e-6 2.375e-6 7.5e-7"/>
                        <joint name="finger_joint1" class="finger"/>
                        <geom class="finger" type="box" size="0.0105 0.006 0.026" pos="0 0.0075 0.026"/>
                      </body>
                      <body name="right_finger" pos="0 0 0.0584" quat="0 0 0 1" gravcomp="1">
                        <inertial mass="0.015" pos="0 0 0" diaginertia="2.375e-6 2.375e-6 7.5e-7"/>
                        <joint name="finger_joint2" class="finger"/>
                        <geom class="finger" type="box" size="0.0105 0.006 0.026" pos="0 0.0075 0.026"/>
                      </body>
                    </body>
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>"""


_ROBOT_ACTUATORS = """
    <general class="panda" name="actuator1" joint="joint1" gainprm="4500" biasprm="0 -4500 -225"/>
    <general class="panda" name="actuator2" joint="joint2" gainprm="4500" biasprm="0 -4500 -225"
        ctrlrange="-1.7628 1.7628"/>
    <general class="panda" name="actuator3" joint="joint3" gainprm="3500" biasprm="0 -3500 -175"/>
    <general class="panda" name="actuator4" joint="joint4" gainprm="3500" biasprm="0 -3500 -175"
        ctrlrange="-3.0718 -0.0698"/>
    <general class="panda" name="actuator5" joint="joint5" gainprm="2000" biasprm="0 -2000 -100"
        forcerange="-12 12"/>
    <general class="panda" name="actuator6" joint="joint6" gainprm="2000" biasprm="0 -2000 -100"
        forcerange="-12 12" ctrlrange="-0.0175 3.7525"/>
    <general class="panda" name="actuator7" joint="joint7" gainprm="2000" biasprm="0 -2000 -100"
        forcerange="-12 12"/>
    <!-- gripper command u in [0, 1] (1 = open) -> per-finger target 0.04 u; stiffer than
         Menagerie's (kp 100) so a grasped 50 g block does not slip during 0.2 m/s moves -->
    <general class="panda" name="gripper" tendon="split" forcerange="-70 70" ctrlrange="0 1"
        gainprm="16" biasprm="0 -400 -20"/>"""


def _cube_xml(spec: ObjectSpec) -> str:
    (half,) = spec.size
    return f'<geom name="{spec.name}_geom" class="object" type="box" size="{half} {half} {half}"/>'


def _can_xml(spec: ObjectSpec) -> str:
    radius, half_height = spec.size
    return f'<geom name="{spec.name}_geom" class="object" type="cylinder" size="{radius} {half_height}"/>'


def _ball_xml(spec: ObjectSpec) -> str:
    (radius,) = spec.size
    return f'<geom name="{spec.name}_geom" class="object" type="sphere" size="{radius}"/>'


def _bowl_xml(spec: ObjectSpec) -> str:
    """A bowl as a flat disc plus a ring of 12 slanted wall boxes (MuJoCo collides convex parts)."""
    inner_radius, wall_height = spec.size
    wall_thickness = 0.008
    parts = [f'<geom name="{spec.name}_geom" class="object" type="cylinder" '
             f'size="{inner_radius + wall_thickness} 0.004" pos="0 0 0.004"/>']
    segments = 12
    half_length = (inner_radius + wall_thickness) * np.tan(np.pi / segments) + 0.002
    for k in range(segments):
        angle = 2 * np.pi * k / segments
        radius = inner_radius + wall_thickness / 2
        # walls stand on the disc (z from 0.008 up), so only the disc touches the table
        pos = (radius * np.cos(angle), radius * np.sin(angle), 0.004 + wall_height / 2)
        quat = (np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2))
        parts.append(f'<geom class="object" type="box" size="{wall_thickness / 2} {half_length:.4f} '
                     f'{wall_height / 2 - 0.004}" pos="{_fmt(pos)}" quat="{_fmt(quat)}"/>')
    return "\n".join(parts)


_OBJECT_BUILDERS = {"cube": _cube_xml, "can": _can_xml, "puck": _can_xml, "ball": _ball_xml,
                    "bowl": _bowl_xml}


def object_half_height(spec: ObjectSpec) -> float:
    """Height of the object's frame above the table when resting upright."""
    if spec.kind == "cube":
        return spec.size[0]
    if spec.kind in ("can", "puck"):
        return spec.size[1]
    if spec.kind == "ball":
        return spec.size[0]
    return 0.0  # bowl: frame at its bottom


def object_footprint_radius(spec: ObjectSpec) -> float:
    """Radius of a disc containing the object's footprint (for collision-free layouts)."""
    if spec.kind == "cube":
        return spec.size[0] * np.sqrt(2.0)
    if spec.kind == "bowl":
        return spec.size[0] + 0.008
    return spec.size[0]


def _object_body_xml(spec: ObjectSpec, index: int) -> str:
    # Parked apart below the table until the task places it at reset.
    parked = (0.0, 2.0 + 0.3 * index, -0.5)
    return (f'<body name="{spec.name}" pos="{_fmt(parked)}">'
            f'<freejoint name="{spec.name}_joint"/>'
            f'<inertial mass="{spec.mass}" pos="0 0 0" '
            f'diaginertia="{_fmt([spec.mass * 1e-3] * 3)}"/>'
            f'{_OBJECT_BUILDERS[spec.kind](spec)}</body>')


TABLE_TEXTURES = ("table_wood", "table_checker", "table_grid", "table_plain_dark", "table_noise")
# Table textures only the training distribution uses: the `background` suite never shows them.
TRAINING_TABLE_TEXTURES = ("train_cross", "train_gradient", "train_speckle", "train_edges")


def build_mjcf(spec: SceneSpec) -> str:
    """The scene's MJCF text; compile it with `scene_assets(spec)` as the assets."""
    static_cameras = "\n".join(_camera_xml(DEFAULT_CAMERAS[name]) for name in spec.cameras
                               if not DEFAULT_CAMERAS[name].on_hand)
    wrist = "\n".join(_camera_xml(DEFAULT_CAMERAS[name]) for name in spec.cameras
                      if DEFAULT_CAMERAS[name].on_hand)
    objects = list(spec.objects) + distractor_specs(spec.num_distractors)
    names = [obj.name for obj in objects]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate object names {names}")
    bodies = "\n".join(_object_body_xml(obj, i) for i, obj in enumerate(objects))
    zones = "\n".join(
        f'<geom name="{zone.name}" type="box" size="{zone.half_size[0]} {zone.half_size[1]} 0.0005" '
        f'pos="{zone.center[0]} {zone.center[1]} 0.0005" rgba="{_fmt(zone.rgba)}" contype="0" '
        f'conaffinity="0"/>'
        for zone in spec.zones)
    occluder = ('<body name="occluder" mocap="true" pos="0 3 -1"><geom name="occluder_geom" '
                'type="box" size="0.03 0.03 0.004" rgba="0.45 0.42 0.4 1" contype="0" conaffinity="0"/>'
                '</body>') if spec.occluder else ""
    # MuJoCo's point light type renders nothing: a spot light with a 180 degree cutoff is one.
    # Dark until a training perturbation places and colours it.
    fill_light = ('<light name="fill" mode="fixed" pos="0.5 0 1.2" dir="0 0 -1" cutoff="180" exponent="1" '
                  'diffuse="0 0 0" specular="0 0 0" castshadow="false"/>') if spec.fill_light else ""
    cx = (TABLE_X_RANGE[0] + TABLE_X_RANGE[1]) / 2
    hx = (TABLE_X_RANGE[1] - TABLE_X_RANGE[0]) / 2
    hy = (TABLE_Y_RANGE[1] - TABLE_Y_RANGE[0]) / 2
    width, height = spec.offscreen_size
    board_assets = "" if spec.calibration_board is None else (
        f'<texture name="calibration_board" type="2d" file="{BOARD_TEXTURE_FILE}"/>'
        '<material name="calibration_board" texture="calibration_board" texrepeat="1 1" texuniform="false" '
        'specular="0" shininess="0"/>')
    return f"""<mujoco model="vla3d_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="0.002" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <global offwidth="{width}" offheight="{height}"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.45 0.45 0.45" specular="0.1 0.1 0.1"/>
    <map znear="0.01" zfar="50"/>
  </visual>
  <statistic center="0.4 0 0.2" extent="1.0"/>
  <default>
    <default class="panda">
      <joint armature="0.1" damping="1" axis="0 0 1" range="-2.8973 2.8973"/>
      <general dyntype="none" biastype="affine" ctrlrange="-2.8973 2.8973" forcerange="-87 87"/>
      <!-- contype 2 / conaffinity 1: the arm touches the table and objects but not itself (its
           primitive link shapes are fatter than the real links near the wrist) -->
      <default class="arm">
        <geom contype="2" conaffinity="1" group="1" condim="3"/>
      </default>
      <default class="finger">
        <joint axis="0 1 0" type="slide" range="0 0.04" armature="0.01" damping="5"/>
        <geom contype="2" conaffinity="1" condim="4" friction="1.5 0.02 0.001" material="robot_dark"
              solref="0.004 1" solimp="0.95 0.99 0.001"/>
      </default>
    </default>
    <default class="object">
      <geom condim="4" friction="1.0 0.01 0.001" solref="0.004 1" solimp="0.95 0.99 0.001"
            rgba="0.5 0.5 0.5 1"/>
    </default>
  </default>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.55 0.6 0.68" rgb2="0.2 0.22 0.25" width="64" height="64"/>
    <texture name="table_wood" type="2d" builtin="flat" rgb1="0.62 0.5 0.36" rgb2="0.55 0.43 0.3" mark="random" random="0.25" markrgb="0.5 0.38 0.26" width="128" height="128"/>
    <texture name="table_checker" type="2d" builtin="checker" rgb1="0.75 0.75 0.72" rgb2="0.45 0.45 0.47" width="128" height="128"/>
    <texture name="table_grid" type="2d" builtin="checker" mark="edge" rgb1="0.3 0.35 0.3" rgb2="0.32 0.37 0.32" markrgb="0.8 0.8 0.8" width="128" height="128"/>
    <texture name="table_plain_dark" type="2d" builtin="flat" rgb1="0.2 0.2 0.22" width="32" height="32"/>
    <texture name="table_noise" type="2d" builtin="flat" rgb1="0.7 0.68 0.6" mark="random" random="0.5" markrgb="0.25 0.3 0.45" width="128" height="128"/>
    <texture name="train_cross" type="2d" builtin="flat" mark="cross" rgb1="0.58 0.6 0.62" markrgb="0.3 0.28 0.25" width="128" height="128"/>
    <texture name="train_gradient" type="2d" builtin="gradient" rgb1="0.85 0.8 0.7" rgb2="0.35 0.4 0.45" width="128" height="128"/>
    <texture name="train_speckle" type="2d" builtin="flat" rgb1="0.45 0.5 0.42" mark="random" random="0.15" markrgb="0.9 0.9 0.85" width="128" height="128"/>
    <texture name="train_edges" type="2d" builtin="checker" mark="edge" rgb1="0.55 0.45 0.5" rgb2="0.6 0.5 0.55" markrgb="0.15 0.15 0.2" width="128" height="128"/>
    <texture name="wall" type="2d" builtin="flat" rgb1="0.78 0.78 0.76" width="32" height="32"/>
    <material name="table" texture="table_wood" texrepeat="3 3" texuniform="false"/>
    <material name="floor" rgba="0.35 0.35 0.38 1"/>
    <material name="wall" texture="wall" texrepeat="2 2"/>
    <material name="robot_white" rgba="0.92 0.92 0.93 1" specular="0.3" shininess="0.3"/>
    <material name="robot_dark" rgba="0.22 0.22 0.24 1" specular="0.3" shininess="0.3"/>
    {board_assets}
  </asset>
  <worldbody>
    <light name="key" directional="true" pos="0.5 -0.5 2.0" dir="-0.2 0.3 -1" diffuse="0.55 0.55 0.55" specular="0.1 0.1 0.1" castshadow="false"/>
    <geom name="floor" type="plane" size="4 4 0.1" pos="0 0 -0.75" material="floor" contype="0" conaffinity="0"/>
    <geom name="wall" type="box" size="0.02 2.5 1.2" pos="-1.2 0 0.3" material="wall" contype="0" conaffinity="0"/>
    <geom name="table" type="box" size="{hx} {hy} {TABLE_THICKNESS / 2}" pos="{cx} 0 {-TABLE_THICKNESS / 2}" material="table" condim="3" friction="0.6 0.005 0.0001"/>
    {zones}
    {static_cameras}
    {_board_geom_xml(spec, "table")}
    {_robot_xml(wrist, _board_geom_xml(spec, "hand"))}
    {bodies}
    {occluder}
    {fill_light}
  </worldbody>
  <contact>
    <exclude body1="link7" body2="hand"/>
    <exclude body1="link0" body2="link1"/>
  </contact>
  <tendon>
    <fixed name="split">
      <joint joint="finger_joint1" coef="0.5"/>
      <joint joint="finger_joint2" coef="0.5"/>
    </fixed>
  </tendon>
  <equality>
    <joint joint1="finger_joint1" joint2="finger_joint2" solimp="0.95 0.99 0.001" solref="0.005 1"/>
  </equality>
  <actuator>{_ROBOT_ACTUATORS}
  </actuator>
</mujoco>
"""
