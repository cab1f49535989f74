"""Calibration samples on disk: a folder of images (+ end-effector poses), or a bag.

A sample folder is what the live collector node and `vla3d calibrate sim-capture` write and what
`vla3d calibrate` reads:

    DIR/samples.yaml   camera, base_frame, ee_frame, board (the CharucoBoardSpec fields), and per
                       sample: image file, stamp, T_base_ee as {xyz, quat_xyzw} (null when no
                       pose was known: intrinsics only)
    DIR/000.png ...    the colour images (lossless)

A folder without samples.yaml is read as plain images (`*.png`, `*.jpg`), enough for intrinsics.
From a bag, images come from one Image or CompressedImage topic and the end-effector pose from
the /tf transform `base_frame -> ee_frame` published directly (as `vla3d convert` writes it; a
robot whose /tf has a chain of links is sampled live with the collector node instead).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from vla3d_ros.calibration.board import CharucoBoardSpec
from vla3d_ros.calibration.handeye import extrinsics_block
from vla3d_ros.geometry import quaternion_xyzw_to_matrix

SAMPLES_FILE = "samples.yaml"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_POSE_STAMP_GAP = 0.05   # s between an image and the nearest EE transform in a bag


@dataclass(frozen=True)
class Sample:
    """name (file or bag stamp), rgb (H, W, 3) uint8, T_base_ee (4, 4) or None, stamp (s)."""

    name: str
    rgb: np.ndarray
    T_base_ee: np.ndarray | None
    stamp: float = 0.0


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _pose_matrix(entry, where: str) -> np.ndarray | None:
    if entry is None:
        return None
    try:
        T = np.eye(4)
        T[:3, :3] = quaternion_xyzw_to_matrix(np.asarray(entry["quat_xyzw"], np.float64))
        T[:3, 3] = np.asarray(entry["xyz"], np.float64)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{where}: T_base_ee must be {{xyz: [3], quat_xyzw: [4]}}, got {entry!r} ({error})") from None
    return T


@dataclass(frozen=True)
class SampleFolder:
    """A loaded folder: its samples in file order, and the board / frames its header names (None /
    empty for a plain image folder)."""

    samples: list[Sample]
    board: CharucoBoardSpec | None = None
    camera: str = ""
    base_frame: str = ""
    ee_frame: str = ""


def load_sample_folder(folder: Path | str) -> SampleFolder:
    """The samples of a folder (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a directory")
    index = folder / SAMPLES_FILE
    if not index.is_file():
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ValueError(f"{folder} has neither {SAMPLES_FILE} nor images ({', '.join(IMAGE_SUFFIXES)})")
        return SampleFolder([Sample(p.name, _read_rgb(p), None) for p in images])
    data = yaml.safe_load(index.read_text()) or {}
    entries = data.get("samples") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{index}: expected a mapping with a 'samples' list")
    samples = []
    for i, entry in enumerate(entries):
        where = f"{index}: samples[{i}]"
        if not isinstance(entry, dict) or "image" not in entry:
            raise ValueError(f"{where}: expected {{image, stamp, T_base_ee}}, got {entry!r}")
        samples.append(Sample(str(entry["image"]), _read_rgb(folder / str(entry["image"])),
                              _pose_matrix(entry.get("T_base_ee"), where), float(entry.get("stamp", 0.0))))
    board = data.get("board")
    try:
        board = None if board is None else CharucoBoardSpec(**board)
    except TypeError as error:
        raise ValueError(f"{index}: board: {error}") from None
    return SampleFolder(samples, board, str(data.get("camera", "")), str(data.get("base_frame", "")),
                        str(data.get("ee_frame", "")))


class SampleFolderWriter:
    """Appends samples to a folder; samples.yaml is rewritten atomically after every sample, so a
    session interrupted at any point leaves a readable folder."""

    def __init__(self, folder: Path | str, camera: str, board: CharucoBoardSpec, base_frame: str = "",
                 ee_frame: str = "") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if (self.folder / SAMPLES_FILE).exists():
            raise FileExistsError(f"{self.folder / SAMPLES_FILE} exists: choose a new folder for a new session")
        self.header = {"camera": camera, "base_frame": base_frame, "ee_frame": ee_frame,
                       "board": dataclasses.asdict(board)}
        self.entries: list[dict] = []

    def add(self, rgb: np.ndarray, T_base_ee: np.ndarray | None, stamp: float) -> Path:
        name = f"{len(self.entries):03d}.png"
        if not cv2.imwrite(str(self.folder / name), cv2.cvtColor(np.asarray(rgb, np.uint8), cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {self.folder / name}")
        self.entries.append({"image": name, "stamp": float(stamp),
                             "T_base_ee": None if T_base_ee is None else extrinsics_block(T_base_ee)})
        temporary = self.folder / f".{SAMPLES_FILE}.tmp"
        temporary.write_text(yaml.safe_dump({**self.header, "samples": self.entries}, sort_keys=False))
        os.replace(temporary, self.folder / SAMPLES_FILE)
        return self.folder / name

    def __len__(self) -> int:
        return len(self.entries)


def read_bag_samples(bag: Path | str, image_topic: str, *, base_frame: str = "", ee_frame: str = "",
                     every: int = 1) -> list[Sample]:
    """Every `every`-th image of `image_topic`; with `ee_frame`, each paired with the /tf transform
    base_frame -> ee_frame nearest in stamp (images with none within `MAX_POSE_STAMP_GAP` dropped)."""
    from rosbags.rosbag2 import Reader

    from vla3d_ros.data.bags import decode_rgb_message, typestore

    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    store = typestore()
    images: list[tuple[float, np.ndarray]] = []
    poses: list[tuple[float, np.ndarray]] = []
    with Reader(Path(bag)) as reader:
        topics = {c.topic: c for c in reader.connections}
        if image_topic not in topics:
            raise ValueError(f"{bag}: no topic {image_topic!r}; image topics: "
                             f"{sorted(t for t, c in topics.items() if c.msgtype.endswith('Image'))}")
        wanted = [topics[image_topic]] + ([topics["/tf"]] if ee_frame and "/tf" in topics else [])
        count = 0
        for connection, _, raw in reader.messages(connections=wanted):
            msg = store.deserialize_cdr(raw, connection.msgtype)
            if connection.topic == image_topic:
                if count % every == 0:
                    stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
                    images.append((stamp, decode_rgb_message(msg)))
                count += 1
                continue
            for tf in msg.transforms:
                if tf.header.frame_id.lstrip("/") == base_frame and tf.child_frame_id.lstrip("/") == ee_frame:
                    t, q = tf.transform.translation, tf.transform.rotation
                    poses.append((tf.header.stamp.sec + 1e-9 * tf.header.stamp.nanosec,
                                  _pose_matrix({"xyz": [t.x, t.y, t.z], "quat_xyzw": [q.x, q.y, q.z, q.w]}, "/tf")))
    if ee_frame and not poses:
        raise ValueError(f"{bag}: no /tf transform {base_frame} -> {ee_frame} (published directly)")
    samples = []
    pose_stamps = np.array([stamp for stamp, _ in poses])
    for stamp, rgb in images:
        T = None
        if ee_frame:
            nearest = int(np.argmin(np.abs(pose_stamps - stamp)))
            if abs(pose_stamps[nearest] - stamp) > MAX_POSE_STAMP_GAP:
                continue
            T = poses[nearest][1]
        samples.append(Sample(f"{image_topic}@{stamp:.3f}", rgb, T, stamp))
    return samples
