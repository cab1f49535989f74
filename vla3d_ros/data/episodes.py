"""Episodes on disk: one directory per episode, memory-mappable arrays plus compressed RGB.

Format (format_version 1)::

    <root>/episode_000042/
      meta.json               task, instruction, seed, perturbations, success, camera_names,
                              image_size [H, W], step_period, action_names, joint_names, object_ids,
                              num_steps, rgb_format, format_version (+ any extra keys the writer got)
      rgb_<camera>.bin        the T frames of one camera, JPEG (quality 95, 4:4:4) or PNG, back to back
      rgb_<camera>.index.npy  (T + 1,) int64 byte offsets: frame t is bin[index[t]:index[t + 1]]
      depth.npy               (T, V, H, W) uint16 millimetres, 0 = invalid (NaN, inf, <= 0, >= 65.535 m)
      segmentation.npy        (T, V, H, W) uint8 instance ids, 0 = background (only if recorded)
      intrinsics.npy          (T, V, 3, 3) float64 K per camera per step (OpenCV convention)
      T_base_cam.npy          (T, V, 4, 4) float64 camera -> base per camera per step
      joint_positions.npy     (T, J) float32
      ee_pose.npy             (T, 7) float32 x, y, z, qx, qy, qz, qw (base frame)
      gripper.npy             (T,) float32 opening in [0, 1], 1 = open
      stamp.npy               (T,) float64 seconds
      actions.npy             (T, 7) float32 the action taken after observation t (EE_DELTA_ACTION_NAMES)

Every .npy is a plain numpy array (np.load(..., mmap_mode="r", allow_pickle=False)), so a training
loader on 2 cores touches only the bytes of the steps it samples: random access is O(1) per step
(one JPEG decode per view plus memory-mapped slices). Depth round-trips exactly at millimetre
resolution; segmentation, K, T, state and actions round-trip exactly; RGB is lossy with JPEG
(lossless with rgb_format="png").

Writes are atomic: the writer fills `.episode_000042.tmp/` and renames it to `episode_000042/` in
`close()`, so a reader never sees a half-written episode and an interrupted run leaves only a
temporary directory that the next writer of that index replaces.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from vla3d_ros.types import EE_DELTA_ACTION_NAMES, Observation

FORMAT_VERSION = 1
RGB_FORMATS = ("jpeg", "png")
JPEG_QUALITY = 95
MAX_DEPTH_MM = np.iinfo(np.uint16).max
_EPISODE_NAME = re.compile(r"^episode_(\d{6,})$")


def episode_dir_name(episode_index: int) -> str:
    return f"episode_{episode_index:06d}"


def depth_to_millimetres(depth: np.ndarray) -> np.ndarray:
    """float metres -> uint16 millimetres; NaN, inf, <= 0 and out-of-range become 0 (invalid)."""
    millimetres = np.rint(np.where(np.isfinite(depth), depth, 0.0) * 1000.0)
    millimetres[(millimetres <= 0) | (millimetres >= MAX_DEPTH_MM)] = 0
    return millimetres.astype(np.uint16)


def depth_from_millimetres(millimetres: np.ndarray) -> np.ndarray:
    """uint16 millimetres -> float32 metres with NaN where invalid (0)."""
    depth = millimetres.astype(np.float32) / 1000.0
    depth[millimetres == 0] = np.nan
    return depth


def _encode_rgb(image: np.ndarray, rgb_format: str) -> bytes:
    buffer = io.BytesIO()
    if rgb_format == "jpeg":
        # 4:4:4 (no chroma subsampling): colour edges of small objects survive at 128 px
        Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    else:
        Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _save_array(path: Path, array: np.ndarray) -> None:
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)


class EpisodeWriter:
    """Collects steps of one episode and writes them atomically (see the module docstring).

    `meta` must hold "task" and "step_period" (seconds); "seed", "perturbations" (list of "name:level"),
    "object_ids" (name -> instance id) and "action_names" are recommended; any other JSON-able keys
    are kept. Use as a context manager: leaving the block by an exception discards the episode.
    """

    def __init__(self, root: Path, episode_index: int, meta: dict, camera_names: Sequence[str], *,
                 rgb_format: str = "jpeg") -> None:
        if episode_index < 0:
            raise ValueError(f"episode_index must be >= 0, got {episode_index}")
        missing = [key for key in ("task", "step_period") if key not in meta]
        if missing:
            raise ValueError(f"episode meta lacks {missing}; got keys {sorted(meta)}")
        if not float(meta["step_period"]) > 0:
            raise ValueError(f"meta step_period must be > 0 s, got {meta['step_period']!r}")
        if rgb_format not in RGB_FORMATS:
            raise ValueError(f"rgb_format must be one of {RGB_FORMATS}, got {rgb_format!r}")
        if len(set(camera_names)) != len(camera_names) or not camera_names:
            raise ValueError(f"camera_names must be non-empty and unique, got {list(camera_names)}")
        self.root = Path(root)
        self.final_dir = self.root / episode_dir_name(episode_index)
        if self.final_dir.exists():
            raise FileExistsError(f"episode {self.final_dir} already exists")
        self.tmp_dir = self.root / f".{episode_dir_name(episode_index)}.tmp"
        if self.tmp_dir.exists():   # left by an interrupted run
            shutil.rmtree(self.tmp_dir)
        self.tmp_dir.mkdir(parents=True)
        self.meta = dict(meta)
        self.meta.setdefault("action_names", list(EE_DELTA_ACTION_NAMES))
        self.camera_names = tuple(camera_names)
        self.rgb_format = rgb_format
        self._rgb_files = [open(self.tmp_dir / f"rgb_{name}.bin", "wb") for name in self.camera_names]
        self._rgb_offsets: list[list[int]] = [[0] for _ in self.camera_names]
        self._arrays: dict[str, list[np.ndarray]] = {key: [] for key in (
            "depth", "segmentation", "intrinsics", "T_base_cam", "joint_positions", "ee_pose", "gripper",
            "stamp", "actions")}
        self._image_size: tuple[int, int] | None = None
        self._instruction: str | None = None
        self._joint_names: tuple[str, ...] | None = None
        self._closed = False

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.abort()
            raise RuntimeError(f"EpisodeWriter for {self.final_dir} left without close(success)")

    def __len__(self) -> int:
        return len(self._arrays["actions"])

    def add_step(self, obs: Observation, action: np.ndarray, segmentation: np.ndarray | None = None) -> None:
        """Record observation t and the action taken after it."""
        if self._closed:
            raise RuntimeError("add_step after close()")
        if tuple(obs.camera_names) != self.camera_names:
            raise ValueError(f"observation cameras {obs.camera_names} != writer cameras {self.camera_names}")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (len(self.meta["action_names"]),):
            raise ValueError(f"action must be ({len(self.meta['action_names'])},), got {action.shape}")
        image_size = obs.rgb.shape[1:3]
        if self._image_size is None:
            self._image_size = image_size
            self._instruction = obs.instruction
            self._joint_names = tuple(obs.joint_names)
        if image_size != self._image_size:
            raise ValueError(f"image size changed within the episode: {image_size} != {self._image_size}")
        if obs.instruction != self._instruction:
            raise ValueError(f"instruction changed within the episode: {obs.instruction!r} != {self._instruction!r}")
        if obs.depth is None:
            raise ValueError("episodes record RGB-D: observation depth is None")
        has_segmentation = segmentation is not None
        if len(self) > 0 and has_segmentation != (len(self._arrays["segmentation"]) > 0):
            raise ValueError("segmentation must be given for every step or for none")
        if has_segmentation:
            segmentation = np.asarray(segmentation)
            if segmentation.shape != obs.depth.shape:
                raise ValueError(f"segmentation must be {obs.depth.shape}, got {segmentation.shape}")
            if segmentation.min(initial=0) < 0 or segmentation.max(initial=0) > 255:
                raise ValueError(f"instance ids must be in [0, 255], got range "
                                 f"[{segmentation.min()}, {segmentation.max()}]")
            self._arrays["segmentation"].append(segmentation.astype(np.uint8))
        for view, file in enumerate(self._rgb_files):
            file.write(_encode_rgb(obs.rgb[view], self.rgb_format))
            self._rgb_offsets[view].append(file.tell())
        self._arrays["depth"].append(depth_to_millimetres(obs.depth))
        self._arrays["intrinsics"].append(np.asarray(obs.intrinsics, np.float64))
        self._arrays["T_base_cam"].append(np.asarray(obs.T_base_cam, np.float64))
        self._arrays["joint_positions"].append(np.asarray(obs.joint_positions, np.float32))
        self._arrays["ee_pose"].append(np.asarray(obs.ee_pose, np.float32))
        self._arrays["gripper"].append(np.float32(obs.gripper))
        self._arrays["stamp"].append(np.float64(obs.stamp))
        self._arrays["actions"].append(action)

    def close(self, success: bool) -> Path:
        """Write arrays and meta, then atomically publish the episode; returns its directory."""
        if self._closed:
            raise RuntimeError("close() called twice")
        if len(self) == 0:
            self.abort()
            raise ValueError(f"episode {self.final_dir.name} has no steps")
        for file in self._rgb_files:
            file.close()
        for view, name in enumerate(self.camera_names):
            _save_array(self.tmp_dir / f"rgb_{name}.index.npy", np.asarray(self._rgb_offsets[view], np.int64))
        for key, values in self._arrays.items():
            if values:
                _save_array(self.tmp_dir / f"{key}.npy", np.stack(values))
        meta = dict(self.meta)
        meta.update(
            success=bool(success), camera_names=list(self.camera_names), image_size=list(self._image_size),
            num_steps=len(self), instruction=self._instruction, joint_names=list(self._joint_names),
            rgb_format=self.rgb_format, format_version=FORMAT_VERSION,
            has_segmentation=bool(self._arrays["segmentation"]))
        meta.setdefault("seed", None)
        meta.setdefault("perturbations", [])
        meta.setdefault("object_ids", {})
        with open(self.tmp_dir / "meta.json", "w") as file:
            json.dump(meta, file, indent=1, sort_keys=True)
        os.replace(self.tmp_dir, self.final_dir)
        self._closed = True
        return self.final_dir

    def abort(self) -> None:
        """Discard the episode (nothing is published)."""
        for file in self._rgb_files:
            file.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self._closed = True


class EpisodeReader:
    """Random access to one episode written by `EpisodeWriter` (arrays memory-mapped)."""

    def __init__(self, episode_dir: Path) -> None:
        self.episode_dir = Path(episode_dir)
        meta_path = self.episode_dir / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.episode_dir} is not an episode (no meta.json)")
        with open(meta_path) as file:
            self.meta: dict = json.load(file)
        version = self.meta.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"{self.episode_dir}: format_version {version!r} is not {FORMAT_VERSION}")
        self.camera_names = tuple(self.meta["camera_names"])
        self._num_steps = int(self.meta["num_steps"])

        def load(name: str) -> np.ndarray:
            array = np.load(self.episode_dir / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            if array.shape[0] != self._num_steps:
                raise ValueError(f"{self.episode_dir}/{name}.npy has {array.shape[0]} steps, "
                                 f"meta says {self._num_steps}")
            return array

        self._depth = load("depth")
        self._intrinsics = load("intrinsics")
        self._T_base_cam = load("T_base_cam")
        self._joint_positions = load("joint_positions")
        self._ee_pose = load("ee_pose")
        self._gripper = load("gripper")
        self._stamp = load("stamp")
        self._actions = load("actions")
        self._segmentation = load("segmentation") if self.meta.get("has_segmentation") else None
        self._rgb_bins = [np.memmap(self.episode_dir / f"rgb_{name}.bin", dtype=np.uint8, mode="r")
                          for name in self.camera_names]
        self._rgb_index = [np.load(self.episode_dir / f"rgb_{name}.index.npy", allow_pickle=False)
                           for name in self.camera_names]

    def __len__(self) -> int:
        return self._num_steps

    def _check(self, t: int) -> int:
        if not -self._num_steps <= t < self._num_steps:
            raise IndexError(f"step {t} out of range for an episode of {self._num_steps} steps")
        return t % self._num_steps

    def rgb(self, t: int) -> np.ndarray:
        """(V, H, W, 3) uint8."""
        t = self._check(t)
        frames = []
        for data, index in zip(self._rgb_bins, self._rgb_index):
            with Image.open(io.BytesIO(data[index[t]:index[t + 1]].tobytes())) as image:
                frames.append(np.asarray(image.convert("RGB")))
        return np.stack(frames)

    def depth(self, t: int) -> np.ndarray:
        """(V, H, W) float32 metres, NaN = invalid."""
        return depth_from_millimetres(np.asarray(self._depth[self._check(t)]))

    def depth_millimetres(self, t: int) -> np.ndarray:
        """(V, H, W) uint16 as stored (0 = invalid)."""
        return np.array(self._depth[self._check(t)])

    def intrinsics(self, t: int) -> np.ndarray:
        return np.array(self._intrinsics[self._check(t)])

    def T_base_cam(self, t: int) -> np.ndarray:
        return np.array(self._T_base_cam[self._check(t)])

    def observation(self, t: int) -> Observation:
        t = self._check(t)
        return Observation(
            camera_names=self.camera_names, rgb=self.rgb(t), depth=self.depth(t),
            intrinsics=self.intrinsics(t), T_base_cam=self.T_base_cam(t),
            joint_positions=np.array(self._joint_positions[t]), ee_pose=np.array(self._ee_pose[t]),
            gripper=float(self._gripper[t]), instruction=self.meta["instruction"],
            stamp=float(self._stamp[t]), joint_names=tuple(self.meta.get("joint_names", ())))

    def action(self, t: int) -> np.ndarray:
        """(7,) float32."""
        return np.array(self._actions[self._check(t)])

    def actions(self) -> np.ndarray:
        """(T, 7) float32."""
        return np.array(self._actions)

    def states(self) -> np.ndarray:
        """(T, J + 7 + 1) float32, `Observation.state` of every step."""
        return np.concatenate([self._joint_positions, self._ee_pose, np.asarray(self._gripper)[:, None]],
                              axis=1).astype(np.float32)

    def segmentation(self, t: int) -> np.ndarray | None:
        """(V, H, W) int32 instance ids, or None if the episode has none."""
        if self._segmentation is None:
            return None
        return self._segmentation[self._check(t)].astype(np.int32)


def list_episodes(root: Path) -> list[Path]:
    """Published episode directories under `root`, by index (temporary ones are skipped)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [path for path in root.iterdir()
             if path.is_dir() and _EPISODE_NAME.match(path.name) and (path / "meta.json").is_file()]
    return sorted(found, key=lambda path: int(_EPISODE_NAME.match(path.name).group(1)))
