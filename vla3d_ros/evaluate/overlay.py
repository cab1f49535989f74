"""The policy's 3D beliefs drawn over the camera images it saw (numpy + Pillow, no ROS).

What RViz shows in 3D (`vla3d_ros.ros.markers_node`), as a 2D picture: per view, the instance
centroids (discs coloured by instance id, as in RViz, with "#id s=score" text), the completed
points (dots in their instance's colour) and the planned end-effector path of the current chunk
(magenta polyline, a ring at the current end-effector position). Every point is projected with
the view's own calibration: pixel = K [R | t] (T_base_cam^-1 p), OpenCV convention, so a wrong
extrinsic shows up as markers off their objects. Points behind a camera (z <= 0) are not drawn,
and neither is a path segment with an end behind it.

`render_overlay` tiles frames into one image: a row per time point, a column per camera, each
view upscaled (nearest neighbour, so the pixels the policy saw stay visible) to at least
`min_view_size` pixels so the text is legible even for 32x32 images.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vla3d_ros.geometry import project_points
from vla3d_ros.types import INSTANCE_PALETTE, Instances

PATH_COLOR = (255, 26, 153)            # the RViz path marker's (1.0, 0.1, 0.6)
NO_INSTANCE_COLOR = (235, 235, 235)    # completed points without an owner
CAPTION_HEIGHT = 14                    # px of caption text above each row and tile
_BACKGROUND = (24, 24, 24)


@dataclass
class OverlayFrame:
    """One time point: the views the policy saw and what it believed/planned there.

    V views of H x W pixels; Q instances, P completed points, K path points.
    """

    camera_names: tuple[str, ...]
    rgb: np.ndarray                   # (V, H, W, 3) uint8
    intrinsics: np.ndarray            # (V, 3, 3)
    T_base_cam: np.ndarray            # (V, 4, 4) camera (optical, OpenCV) -> base
    instances: Instances | None = None
    completed_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))     # (P, 3) base frame
    completed_instance: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (P,) id, -1 = none
    ee_path: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))              # (K, 3) base frame
    caption: str = ""

    def __post_init__(self) -> None:
        views = len(self.camera_names)
        if self.rgb.ndim != 4 or self.rgb.shape[0] != views or self.rgb.shape[-1] != 3 or self.rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be ({views}, H, W, 3) uint8 for cameras {self.camera_names}, "
                             f"got {self.rgb.shape} {self.rgb.dtype}")
        if self.intrinsics.shape != (views, 3, 3) or self.T_base_cam.shape != (views, 4, 4):
            raise ValueError(f"intrinsics must be ({views}, 3, 3) and T_base_cam ({views}, 4, 4), got "
                             f"{self.intrinsics.shape} and {self.T_base_cam.shape}")
        for name, points in (("completed_points", self.completed_points), ("ee_path", self.ee_path)):
            if points.ndim != 2 or points.shape[1] != 3:
                raise ValueError(f"{name} must be (N, 3), got {points.shape}")
        if len(self.completed_instance) not in (0, len(self.completed_points)):
            raise ValueError(f"completed_instance has {len(self.completed_instance)} ids for "
                             f"{len(self.completed_points)} points")


def instance_rgb(instance_id: int) -> tuple[int, int, int]:
    """0-255 colour of an instance id (the RViz markers' palette); -1 (no instance) is light grey."""
    if instance_id < 0:
        return NO_INSTANCE_COLOR
    return tuple(int(round(255 * c)) for c in INSTANCE_PALETTE[int(instance_id) % len(INSTANCE_PALETTE)])


def project_to_image(points_base: np.ndarray, K: np.ndarray, T_base_cam: np.ndarray, width: int,
                     height: int) -> tuple[np.ndarray, np.ndarray]:
    """Base-frame points (N, 3) -> (uv (N, 2) pixel coordinates, drawable (N,) bool).

    Drawable = in front of the camera, finite, and inside the image (pixel centres at integers,
    so the image spans [-0.5, W - 0.5) x [-0.5, H - 0.5)).
    """
    points_base = np.asarray(points_base, np.float64).reshape(-1, 3)
    finite = np.all(np.isfinite(points_base), axis=1)
    uv, _, in_front = project_points(np.where(finite[:, None], points_base, 0.0), np.asarray(K, np.float64),
                                     np.asarray(T_base_cam, np.float64))
    inside = (uv[:, 0] >= -0.5) & (uv[:, 0] < width - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < height - 0.5)
    return uv, finite & in_front & inside


def _display_scale(width: int, height: int, min_view_size: int) -> int:
    return max(1, math.ceil(min_view_size / max(1, min(width, height))))


def _to_display(uv: np.ndarray, scale: int) -> np.ndarray:
    """Source pixel coordinates -> upscaled-image coordinates (pixel centres stay centres)."""
    return (uv + 0.5) * scale - 0.5


def draw_view(rgb: np.ndarray, K: np.ndarray, T_base_cam: np.ndarray, frame: OverlayFrame, *,
              scale: int = 1, font: ImageFont.ImageFont | None = None) -> Image.Image:
    """One camera view (H, W, 3) uint8 upscaled by `scale` with the frame's beliefs drawn on it."""
    height, width = rgb.shape[:2]
    image = Image.fromarray(np.ascontiguousarray(rgb)).resize((width * scale, height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    font = font or ImageFont.load_default()

    def project(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        uv, drawable = project_to_image(points, K, T_base_cam, width, height)
        return _to_display(uv, scale), drawable

    dot = max(1.0, 0.6 * scale)
    if len(frame.completed_points):
        uv, drawable = project(frame.completed_points)
        owners = frame.completed_instance if len(frame.completed_instance) else np.full(len(uv), -1)
        for (u, v), owner in zip(uv[drawable], owners[drawable]):
            draw.ellipse((u - dot, v - dot, u + dot, v + dot), fill=instance_rgb(int(owner)))

    if len(frame.ee_path):
        uv, drawable = project(frame.ee_path)
        for a in range(len(uv) - 1):
            if drawable[a] and drawable[a + 1]:
                draw.line((*uv[a], *uv[a + 1]), fill=PATH_COLOR, width=max(1, scale // 2))
        if drawable[0]:
            ring = 2.0 * dot + 2.0
            u, v = uv[0]
            draw.ellipse((u - ring, v - ring, u + ring, v + ring), outline=PATH_COLOR, width=max(1, scale // 2))

    instances = frame.instances
    if instances is not None and len(instances.ids):
        uv, drawable = project(instances.centroids)
        radius = 2.0 * dot + 2.0
        for row in np.flatnonzero(drawable):
            u, v = uv[row]
            color = instance_rgb(int(instances.ids[row]))
            draw.ellipse((u - radius, v - radius, u + radius, v + radius), fill=color, outline=(0, 0, 0))
            label = f"#{int(instances.ids[row])} s={float(instances.scores[row]):.2f}"
            draw.text((u + radius + 1, v - radius - 1), label, fill=color, font=font,
                      stroke_width=1, stroke_fill=(0, 0, 0))
    return image


def render_overlay(frames: Sequence[OverlayFrame], *, min_view_size: int = 256) -> np.ndarray:
    """(rows * (view + captions), views * view, 3) uint8: a row per frame, a column per camera.

    Every frame must have the same cameras and image size (one run).
    """
    if not frames:
        raise ValueError("no frames to draw")
    first = frames[0]
    views, height, width = first.rgb.shape[:3]
    for frame in frames[1:]:
        if frame.camera_names != first.camera_names or frame.rgb.shape != first.rgb.shape:
            raise ValueError(f"frames differ in cameras or image size: {first.camera_names} {first.rgb.shape} vs "
                             f"{frame.camera_names} {frame.rgb.shape}")
    scale = _display_scale(width, height, min_view_size)
    tile_w, tile_h = width * scale, height * scale
    row_h = CAPTION_HEIGHT + CAPTION_HEIGHT + tile_h        # row caption, camera name, view
    canvas = Image.new("RGB", (views * tile_w, len(frames) * row_h), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for row, frame in enumerate(frames):
        top = row * row_h
        draw.text((4, top + 1), frame.caption, fill=(255, 255, 255), font=font)
        for view, name in enumerate(frame.camera_names):
            left = view * tile_w
            draw.text((left + 4, top + CAPTION_HEIGHT + 1), name, fill=(200, 200, 200), font=font)
            canvas.paste(draw_view(frame.rgb[view], frame.intrinsics[view], frame.T_base_cam[view], frame,
                                   scale=scale, font=font), (left, top + 2 * CAPTION_HEIGHT))
    return np.asarray(canvas)


def save_overlay(frames: Sequence[OverlayFrame], path: str | Path, *, min_view_size: int = 256) -> Path:
    """Write `render_overlay(frames)` as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_overlay(frames, min_view_size=min_view_size)).save(path)
    return path


def evenly_spaced(items: Sequence, count: int) -> list:
    """`count` items spread over `items` (first and last included; all of them if fewer)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if len(items) <= count:
        return list(items)
    indices = np.round(np.linspace(0, len(items) - 1, count)).astype(int)
    return [items[i] for i in indices]
