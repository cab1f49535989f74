"""Multi-camera RGB, metric depth and instance segmentation from MuJoCo, plus calibration.

One `mujoco.Renderer` per image size is reused for every camera and mode (contexts are expensive).
Camera calibration is read from the live simulation state, so perturbing a camera's pose or field
of view (model.cam_pos / cam_quat / cam_fovy) changes the reported K and T_base_cam with it:

- K: `geometry.intrinsics_from_fovy(model.cam_fovy, W, H)`; the principal point is checked by the
  unprojection test in test/test_sim_geometry.py;
- T_base_cam: `data.cam_xmat` columns are MuJoCo's camera x-right, y-up, z-back axes; the OpenCV
  axes (x right, y down, z forward) are the same x with y and z negated. The world frame is the
  robot base frame (`scene.py`).
- depth: MuJoCo's linearised z-buffer is the distance along the optical axis (OpenCV z), metres;
  pixels that hit nothing (sky) become NaN.
- segmentation: MuJoCo reports (object id, object type) per pixel; a geom -> instance lookup table
  turns it into instance ids (0 = background, table, robot).
"""
from __future__ import annotations

import mujoco
import numpy as np

from vla3d_ros.geometry import intrinsics_from_fovy

_OPENCV_FROM_MUJOCO = np.diag([1.0, -1.0, -1.0])


def camera_extrinsics(data: mujoco.MjData, camera_id: int) -> np.ndarray:
    """T_base_cam (4, 4) of a MuJoCo camera in the OpenCV convention."""
    T = np.eye(4)
    T[:3, :3] = data.cam_xmat[camera_id].reshape(3, 3) @ _OPENCV_FROM_MUJOCO
    T[:3, 3] = data.cam_xpos[camera_id]
    return T


def camera_intrinsics(model: mujoco.MjModel, camera_id: int, width: int, height: int) -> np.ndarray:
    return intrinsics_from_fovy(float(model.cam_fovy[camera_id]), width, height)


class MultiCameraRenderer:
    """Renders named cameras; `geom_instance` (ngeom,) maps geom ids to instance ids."""

    def __init__(self, model: mujoco.MjModel, camera_names: tuple[str, ...], width: int, height: int,
                 geom_instance: np.ndarray) -> None:
        if width < 8 or height < 8:
            raise ValueError(f"image size must be at least 8x8, got {width}x{height}")
        self.model = model
        self.camera_names = tuple(camera_names)
        self.camera_ids = []
        for name in self.camera_names:
            camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
            if camera_id < 0:
                raise ValueError(f"camera {name!r} is not in the scene")
            self.camera_ids.append(camera_id)
        self.width, self.height = width, height
        if geom_instance.shape != (model.ngeom,):
            raise ValueError(f"geom_instance must be ({model.ngeom},), got {geom_instance.shape}")
        # index -1 (background) -> 0 via the extra last entry
        self._lookup = np.concatenate([geom_instance.astype(np.int32), [0]])
        self._renderer = mujoco.Renderer(model, height=height, width=width)

    def calibration(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
        """K (V, 3, 3) and T_base_cam (V, 4, 4) at the current state (after mj_forward)."""
        K = np.stack([camera_intrinsics(self.model, cid, self.width, self.height) for cid in self.camera_ids])
        T = np.stack([camera_extrinsics(data, cid) for cid in self.camera_ids])
        return K, T

    def render(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """rgb (V, H, W, 3) uint8, depth (V, H, W) float32 metres (NaN = no surface),
        segmentation (V, H, W) int32 instance ids."""
        num_views = len(self.camera_ids)
        rgb = np.empty((num_views, self.height, self.width, 3), np.uint8)
        depth = np.empty((num_views, self.height, self.width), np.float32)
        segmentation = np.empty((num_views, self.height, self.width), np.int32)
        renderer = self._renderer
        far = self.model.vis.map.zfar * self.model.stat.extent
        for view, camera_id in enumerate(self.camera_ids):
            renderer.update_scene(data, camera=camera_id)
            renderer.render(out=rgb[view])
            renderer.enable_depth_rendering()
            renderer.render(out=depth[view])
            renderer.disable_depth_rendering()
            renderer.enable_segmentation_rendering()
            ids = renderer.render()
            renderer.disable_segmentation_rendering()
            is_geom = ids[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM)
            segmentation[view] = self._lookup[np.where(is_geom, ids[..., 0], -1)]
        depth[depth >= far * 0.999] = np.nan
        return rgb, depth, segmentation

    def close(self) -> None:
        self._renderer.close()
