"""The data that flows through vla3d_ros: one observation in, one action chunk out.

The same `Observation` is produced by the simulator (`vla3d_ros.sim`), the episode reader
(`vla3d_ros.data`) and the ROS conversions (`vla3d_ros.ros.conversions`), so training,
evaluation and deployment feed the policy identically.

Conventions (METHOD.md, notation):
- all 3D points are in the robot base frame, metres;
- cameras use the OpenCV convention (x right, y down, z forward); `T_base_cam` maps camera
  points to the base frame;
- images are stored as the sensors give them, (V, H, W, 3) uint8; the model converts to CHW.

Batch keys (the dict a model `forward` takes) are module constants so a typo fails loudly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# ---- batch keys (model inputs) ---------------------------------------------------------------
RGB = "rgb"                          # (B, V, 3, H, W) uint8 or float in [0, 1]
DEPTH = "depth"                      # (B, V, H, W) float32 metres, NaN or 0 = invalid
INTRINSICS = "intrinsics"            # (B, V, 3, 3) float32
T_BASE_CAM = "T_base_cam"            # (B, V, 4, 4) float32
STATE = "state"                      # (B, S) float32 proprioception
EE_POSITION = "ee_position"          # (B, 3) float32 end-effector position, base frame
INSTRUCTION_EMBEDDING = "instruction_embedding"  # (B, E) float32, frozen sentence encoder
ACTION = "action"                    # (B, H, A) float32 target chunk
ACTION_IS_PAD = "action_is_pad"      # (B, H) bool, True past the end of the episode
# ---- batch keys (pseudo-label targets, METHOD.md §2.8 / §3.2) --------------------------------
TARGET_BOXES = "target_boxes"        # (B, T, V, 4) cx, cy, w, h in [0, 1]
TARGET_BOX_VALID = "target_box_valid"  # (B, T, V) bool, instance t visible in view v
TARGET_MASKS = "target_masks"        # (B, T, V, Hm, Wm) bool
TARGET_CENTROIDS = "target_centroids"  # (B, T, 3) float32
TARGET_VALID = "target_valid"        # (B, T) bool, padding of the instance axis
INSTRUCTED_OBJECT_ROW = "instructed_object_row"  # (B,) int64, row of TARGET_* the instruction names; -1 unknown
COMPLETION_POINTS = "completion_points"  # (B, P, 3) float32 METHOD §3.2 P_comp
COMPLETION_VALID = "completion_valid"    # (B, P) bool

# End-effector delta action space shared by the simulator, the policy and the action node.
EE_DELTA_ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")

# Instance id -> RGB in [0, 1] (Tableau-10), stable across steps so a probe keeps its colour in
# every view of the policy's beliefs (RViz markers, the demo's image overlay).
INSTANCE_PALETTE = np.array([
    [0.122, 0.467, 0.706], [1.000, 0.498, 0.055], [0.173, 0.627, 0.173], [0.839, 0.153, 0.157],
    [0.580, 0.404, 0.741], [0.549, 0.337, 0.294], [0.890, 0.467, 0.761], [0.498, 0.498, 0.498],
    [0.737, 0.741, 0.133], [0.090, 0.745, 0.812],
])


@dataclass
class Observation:
    """One synchronised multi-camera RGB-D observation plus proprioception.

    Shapes: V cameras, H x W pixels, J joints.
    """

    camera_names: tuple[str, ...]
    rgb: np.ndarray                  # (V, H, W, 3) uint8
    depth: np.ndarray | None         # (V, H, W) float32 metres, NaN = invalid; None = RGB only
    intrinsics: np.ndarray           # (V, 3, 3) float64
    T_base_cam: np.ndarray           # (V, 4, 4) float64
    joint_positions: np.ndarray      # (J,) float32 radians (or metres for prismatic joints)
    ee_pose: np.ndarray              # (7,) float32 x, y, z, qx, qy, qz, qw in the base frame
    gripper: float                   # opening in [0, 1], 1 = open
    instruction: str
    stamp: float = 0.0               # seconds (ROS time of the synchronised set)
    joint_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        num_views = len(self.camera_names)
        if self.rgb.ndim != 4 or self.rgb.shape[0] != num_views or self.rgb.shape[-1] != 3:
            raise ValueError(f"rgb must be (V={num_views}, H, W, 3), got {self.rgb.shape}")
        if self.rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8, got {self.rgb.dtype}")
        image_hw = self.rgb.shape[1:3]
        if self.depth is not None and self.depth.shape != (num_views, *image_hw):
            raise ValueError(f"depth must be {(num_views, *image_hw)}, got {self.depth.shape}")
        if self.intrinsics.shape != (num_views, 3, 3):
            raise ValueError(f"intrinsics must be ({num_views}, 3, 3), got {self.intrinsics.shape}")
        if self.T_base_cam.shape != (num_views, 4, 4):
            raise ValueError(f"T_base_cam must be ({num_views}, 4, 4), got {self.T_base_cam.shape}")
        if self.ee_pose.shape != (7,):
            raise ValueError(f"ee_pose must be (7,) xyz + quaternion xyzw, got {self.ee_pose.shape}")

    @property
    def num_views(self) -> int:
        return len(self.camera_names)

    @property
    def state(self) -> np.ndarray:
        """Proprioception vector (S,) = joints (J) + ee pose (7) + gripper (1)."""
        return np.concatenate(
            [self.joint_positions, self.ee_pose, [self.gripper]]
        ).astype(np.float32)


@dataclass
class ActionChunk:
    """H future actions of A dimensions, computed from the observation stamped `stamp`."""

    actions: np.ndarray              # (H, A) float32
    dimension_names: tuple[str, ...]
    step_period: float               # seconds between rows
    stamp: float = 0.0               # stamp of the observation it was computed from
    inference_latency: float = 0.0   # seconds

    def __post_init__(self) -> None:
        if self.actions.ndim != 2 or self.actions.shape[1] != len(self.dimension_names):
            raise ValueError(
                f"actions must be (H, A={len(self.dimension_names)}), got {self.actions.shape}"
            )
        if not self.step_period > 0:
            raise ValueError(f"step_period must be > 0 s, got {self.step_period}")

    @property
    def horizon(self) -> int:
        return self.actions.shape[0]

    def planned_ee_positions(self, ee_position: np.ndarray) -> np.ndarray:
        """(H + 1, 3) end-effector positions the chunk plans: `ee_position`, then after each row.

        Rows are per-step deltas in the base frame (`EE_DELTA_ACTION_NAMES`), so the path is the
        cumulative sum of (dx, dy, dz); ValueError for a chunk of another action space.
        """
        if tuple(self.dimension_names[:3]) != EE_DELTA_ACTION_NAMES[:3]:
            raise ValueError(f"a planned path needs (dx, dy, dz) first, chunk has {self.dimension_names}")
        start = np.asarray(ee_position, np.float64).reshape(1, 3)
        return np.concatenate([start, start + np.cumsum(self.actions[:, :3].astype(np.float64), axis=0)])


@dataclass
class Instances:
    """The policy's 3D beliefs at one step: instances and completed geometry (METHOD §2.11, §3.7).

    Q instances, P completed points.
    """

    ids: np.ndarray                  # (Q,) int probe indices
    scores: np.ndarray               # (Q,) float32 sigma(objectness)
    centroids: np.ndarray            # (Q, 3) float32 refined reference points r_j, base frame
    extents: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))  # (Q, 3)
    completed_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    completed_instance: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))  # (P,)
    labels: tuple[str, ...] = ()

    @property
    def uncertainty(self) -> np.ndarray:
        """u_j = 1 - sigma(l_j) (METHOD §2.11)."""
        return (1.0 - self.scores).astype(np.float32)

    def num_completed(self) -> np.ndarray:
        """(Q,) number of completed points attached to each instance."""
        counts = np.zeros(len(self.ids), np.int64)
        for row, probe_id in enumerate(self.ids):
            counts[row] = int(np.sum(self.completed_instance == probe_id))
        return counts
