"""Camera calibration: validated intrinsics from CameraInfo fields, extrinsics from config or TF.

`CameraCalibration` holds K, the distortion coefficients and the image size of one camera and is
validated on construction (K all zeros, non-finite, principal point off the image -> ValueError
quoting the value). It caches the per-pixel viewing rays so unprojecting a depth image is one
multiply (`unproject`).

`CalibrationStore` keeps the calibration of every configured camera plus `T_base_cam`, which comes
either from fixed extrinsics in the runtime YAML or from a `TransformSource` (the ROS node wraps a
tf2_ros buffer in one); both paths give the same matrix. A camera whose intrinsics or extrinsics
are missing is reported by `missing()` with the reason, and asking for it raises
`CalibrationMissing`, so the observation builder never feeds the policy a made-up pose.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from vla3d_ros.geometry import validate_intrinsics

DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant", "")


class CalibrationMissing(LookupError):
    """A camera's intrinsics or extrinsics are not (yet) known."""


@dataclass(frozen=True, eq=False)
class CameraCalibration:
    """Intrinsics of one camera (OpenCV convention), validated.

    The distortion coefficients are kept for reference; the policy consumes rectified or
    distortion-free (simulated) images, so unprojection uses the pinhole model only.
    """

    K: np.ndarray                    # (3, 3) float64
    width: int
    height: int
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (D,)
    distortion_model: str = "plumb_bob"
    _rays: list = field(default_factory=list, init=False, repr=False, compare=False)  # cache: [(H, W, 3)]

    def __post_init__(self) -> None:
        object.__setattr__(self, "K", np.array(self.K, dtype=np.float64))
        self.K.setflags(write=False)  # the cached rays depend on it
        object.__setattr__(self, "distortion", np.asarray(self.distortion, dtype=np.float64).reshape(-1))
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        if self.distortion_model not in DISTORTION_MODELS:
            raise ValueError(f"unknown distortion model {self.distortion_model!r}; expected one of {DISTORTION_MODELS}")
        if not np.all(np.isfinite(self.distortion)):
            raise ValueError(f"distortion has non-finite entries: {self.distortion.tolist()}")
        validate_intrinsics(self.K, int(self.width), int(self.height))

    @classmethod
    def from_camera_info(
        cls, k: Sequence[float], width: int, height: int, d: Sequence[float] = (), distortion_model: str = "plumb_bob"
    ) -> "CameraCalibration":
        """From sensor_msgs/CameraInfo fields (k row-major 9 values, d, width, height)."""
        k = np.asarray(k, dtype=np.float64)
        if k.size != 9:
            raise ValueError(f"CameraInfo k must have 9 values, got {k.size}: {k.tolist()}")
        return cls(K=k.reshape(3, 3), width=int(width), height=int(height), distortion=np.asarray(d, np.float64),
                   distortion_model=distortion_model)

    def same_as(self, other: "CameraCalibration") -> bool:
        return (self.width, self.height, self.distortion_model) == (other.width, other.height, other.distortion_model) \
            and np.array_equal(self.K, other.K) and np.array_equal(self.distortion, other.distortion)

    def check_image_size(self, width: int, height: int, what: str = "image") -> None:
        """ValueError unless an image of `width` x `height` belongs to this calibration."""
        if (width, height) != (self.width, self.height):
            raise ValueError(
                f"{what} is {width}x{height} but its CameraInfo says {self.width}x{self.height}"
            )

    def pixel_rays(self) -> np.ndarray:
        """(H, W, 3) float32 camera-frame rays with z = 1 through every pixel centre (cached)."""
        if not self._rays:
            v, u = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64)
            rays = np.stack(
                [(u - self.K[0, 2]) / self.K[0, 0], (v - self.K[1, 2]) / self.K[1, 1], np.ones_like(u)], axis=-1
            ).astype(np.float32)
            rays.setflags(write=False)
            self._rays.append(rays)
        return self._rays[0]

    def unproject(self, depth_m: np.ndarray, T_base_cam: np.ndarray | None = None) -> np.ndarray:
        """(H, W, 3) float32 points (camera frame, or base frame given T_base_cam); NaN where invalid."""
        self.check_image_size(depth_m.shape[1], depth_m.shape[0], "depth image")
        z = np.where(np.isfinite(depth_m) & (depth_m > 0), depth_m, np.nan).astype(np.float32)
        points = self.pixel_rays() * z[..., None]
        if T_base_cam is not None:
            points = points @ T_base_cam[:3, :3].T.astype(np.float32) + T_base_cam[:3, 3].astype(np.float32)
        return points


class TransformSource(Protocol):
    """Where rigid transforms come from (the ROS node implements it with a tf2_ros buffer)."""

    def lookup_transform(self, target_frame: str, source_frame: str, stamp: float | None) -> np.ndarray:
        """(4, 4) T_target_source (maps source-frame points into target); LookupError if unknown.

        stamp None = the latest available transform.
        """


def validate_rigid_transform(T: np.ndarray, what: str) -> np.ndarray:
    """(4, 4) float64 copy of T, or ValueError quoting it if it is not a finite rigid transform."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"{what} must be a finite 4x4 transform, got {T.tolist()}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0 or not np.allclose(T[3], [0, 0, 0, 1]):
        raise ValueError(f"{what} is not a rigid transform: {T.tolist()}")
    return T.copy()


class CalibrationStore:
    """Intrinsics and extrinsics of every configured camera, with an explicit "missing" state.

    Args:
        base_frame: the robot base frame all extrinsics map into.
        camera_frames: camera name -> optical frame id (for TF lookups).
    """

    def __init__(self, base_frame: str, camera_frames: dict[str, str]) -> None:
        self.base_frame = base_frame
        self.camera_frames = dict(camera_frames)
        self._intrinsics: dict[str, CameraCalibration] = {}
        self._extrinsics: dict[str, np.ndarray] = {}
        self._extrinsics_errors: dict[str, str] = {}
        self._from_tf: set[str] = set()   # cameras whose extrinsics came from the last TF lookup

    @classmethod
    def from_config(cls, config) -> "CalibrationStore":
        """Store for a `RuntimeConfig`, with every camera's fixed `extrinsics` already set."""
        store = cls(config.base_frame, {camera.name: camera.frame_id for camera in config.cameras})
        for camera in config.cameras:
            if camera.extrinsics is not None:
                store.set_extrinsics(camera.name, camera.extrinsics.matrix())
        return store

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(self.camera_frames)

    def _check_camera(self, camera: str) -> None:
        if camera not in self.camera_frames:
            raise KeyError(f"unknown camera {camera!r}; configured: {list(self.camera_frames)}")

    # ---- intrinsics ---------------------------------------------------------------------------

    def update_camera_info(self, camera: str, k, width: int, height: int, d=(), distortion_model="plumb_bob") -> bool:
        """Validate and store CameraInfo fields; returns True if the calibration changed.

        Raises ValueError (quoting the bad value) and keeps the previous calibration if invalid.
        """
        self._check_camera(camera)
        return self.set_intrinsics(camera, CameraCalibration.from_camera_info(k, width, height, d, distortion_model))

    def set_intrinsics(self, camera: str, calibration: CameraCalibration) -> bool:
        """Store a calibration; returns True if it differs from the stored one."""
        self._check_camera(camera)
        previous = self._intrinsics.get(camera)
        if previous is not None and previous.same_as(calibration):
            return False  # CameraInfo repeats every frame: keep the cached rays
        self._intrinsics[camera] = calibration
        return True

    def intrinsics(self, camera: str) -> CameraCalibration:
        self._check_camera(camera)
        if camera not in self._intrinsics:
            raise CalibrationMissing(f"camera {camera!r}: no valid CameraInfo received yet")
        return self._intrinsics[camera]

    # ---- extrinsics ---------------------------------------------------------------------------

    def set_extrinsics(self, camera: str, T_base_cam: np.ndarray) -> None:
        """Fixed extrinsics (kept when a TF lookup fails; `refresh_extrinsics` marks its own as TF)."""
        self._check_camera(camera)
        self._extrinsics[camera] = validate_rigid_transform(T_base_cam, f"T_base_cam of camera {camera!r}")
        self._extrinsics_errors.pop(camera, None)
        self._from_tf.discard(camera)

    def refresh_extrinsics(self, source: TransformSource, stamp: float | None = None,
                           cameras: Sequence[str] | None = None) -> dict[str, str]:
        """Look up T_base_cam of `cameras` (default: all) from `source`.

        Returns {camera: error} for the lookups that failed. A failed camera whose extrinsics came
        from TF loses them until a lookup succeeds again: a camera on the arm whose transform
        stopped has no known pose, and its last one would put the scene in the wrong place (a
        camera fixed in the world is on /tf_static, whose lookups never go stale). Fixed
        extrinsics (`set_extrinsics`, from the config) are kept.
        """
        errors = {}
        for camera in self.camera_names if cameras is None else cameras:
            self._check_camera(camera)
            try:
                T = source.lookup_transform(self.base_frame, self.camera_frames[camera], stamp)
                self.set_extrinsics(camera, T)
                self._from_tf.add(camera)
            except (LookupError, ValueError) as error:
                message = f"T {self.base_frame} <- {self.camera_frames[camera]}: {error}"
                errors[camera] = message
                if camera in self._from_tf:
                    self._from_tf.discard(camera)
                    del self._extrinsics[camera]
                if camera not in self._extrinsics:
                    self._extrinsics_errors[camera] = message
        return errors

    def T_base_cam(self, camera: str) -> np.ndarray:
        """(4, 4) float64 camera-to-base transform."""
        self._check_camera(camera)
        if camera not in self._extrinsics:
            reason = self._extrinsics_errors.get(camera, "not in the config and not looked up from TF")
            raise CalibrationMissing(f"camera {camera!r}: extrinsics missing ({reason})")
        return self._extrinsics[camera]

    def missing(self) -> dict[str, str]:
        """{camera: reason} for every camera that cannot be used yet; empty = all calibrated."""
        problems = {}
        for camera in self.camera_names:
            reasons = []
            if camera not in self._intrinsics:
                reasons.append("no valid CameraInfo")
            if camera not in self._extrinsics:
                reasons.append("extrinsics missing: " + self._extrinsics_errors.get(
                    camera, f"no config extrinsics and no transform {self.base_frame} <- {self.camera_frames[camera]}"))
            if reasons:
                problems[camera] = "; ".join(reasons)
        return problems
