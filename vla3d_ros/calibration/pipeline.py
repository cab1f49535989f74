"""From samples to calibration files: what `vla3d calibrate intrinsics|handeye` runs.

Each function detects the board in every sample, says which samples it dropped and why, solves,
and returns the text to write: a camera_info YAML (intrinsics) or a YAML holding the runtime
config's `extrinsics` block / the hand-to-camera transform plus a static-transform snippet
(hand-eye). The residuals are part of both.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from vla3d_ros.calibration.board import BoardDetection, CharucoBoardSpec
from vla3d_ros.calibration.handeye import (
    HandEyeResult,
    HandEyeSample,
    Mount,
    extrinsics_block,
    solve_hand_eye,
    static_transform_snippet,
)
from vla3d_ros.calibration.intrinsics import (
    CameraInfoFile,
    DistortionModel,
    IntrinsicsResult,
    calibrate_intrinsics,
    camera_info_yaml,
)
from vla3d_ros.calibration.samples import Sample


@dataclass(frozen=True)
class Detected:
    """Samples with the board found (sample, detection) and {name: why} of those dropped."""

    found: list[tuple[Sample, BoardDetection]]
    dropped: dict[str, str]

    def summary(self) -> str:
        lines = [f"board found in {len(self.found)} of {len(self.found) + len(self.dropped)} images"]
        lines += [f"  dropped {name}: {why}" for name, why in self.dropped.items()]
        return "\n".join(lines)


def detect_board(samples: Sequence[Sample], board: CharucoBoardSpec, *, need_pose: bool = False) -> Detected:
    found, dropped = [], {}
    for sample in samples:
        if need_pose and sample.T_base_ee is None:
            dropped[sample.name] = "no end-effector pose"
            continue
        detection = board.detect(sample.rgb)
        if detection is None:
            dropped[sample.name] = "board not found (too few corners)"
        else:
            found.append((sample, detection))
    return Detected(found, dropped)


def intrinsics_from_samples(samples: Sequence[Sample], board: CharucoBoardSpec, camera_name: str, *,
                            distortion_model: DistortionModel = "plumb_bob") -> tuple[IntrinsicsResult, str, Detected]:
    """(result, camera_info YAML text, what was detected)."""
    detected = detect_board(samples, board)
    result = calibrate_intrinsics([d for _, d in detected.found], distortion_model=distortion_model)
    return result, camera_info_yaml(result, camera_name), detected


def hand_eye_from_samples(samples: Sequence[Sample], board: CharucoBoardSpec, camera_info: CameraInfoFile, *,
                          mount: Mount, parent_frame: str, child_frame: str, camera_name: str,
                          method: str = "park") -> tuple[HandEyeResult, str, Detected]:
    """(result, output YAML text, what was detected). `parent_frame` is the base frame
    (eye_to_hand) or the end-effector frame (eye_in_hand); `child_frame` the camera's optical frame."""
    detected = detect_board(samples, board, need_pose=True)
    size = (camera_info.width, camera_info.height)
    wrong_size = [s.name for s, d in detected.found if d.image_size != size]
    if wrong_size:
        raise ValueError(f"images {wrong_size[:3]} are not {size[0]}x{size[1]} like the camera_info")
    result = solve_hand_eye([HandEyeSample(s.T_base_ee, d) for s, d in detected.found], camera_info.K,
                            camera_info.distortion, mount=mount, method=method)
    header = [f"vla3d calibrate handeye: {result.summary()}"]
    if mount == "eye_to_hand":
        body = {"cameras": [{"name": camera_name, "frame_id": child_frame, "extrinsics": extrinsics_block(result.X)}]}
        header.append(f"the `extrinsics` of camera {camera_name!r} in the runtime YAML (optical frame in "
                      f"{parent_frame}); or publish it as a static transform:")
    else:
        body = {"parent_frame": parent_frame, "child_frame": child_frame, "T_ee_cam": extrinsics_block(result.X)}
        header.append(f"{camera_name!r} moves with the hand: publish {parent_frame} -> {child_frame} as a static "
                      "transform (URDF joint or the snippet below) and leave its runtime `extrinsics` unset (TF):")
    header += static_transform_snippet(result.X, parent_frame, child_frame).splitlines()
    text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(body, sort_keys=False,
                                                                      default_flow_style=None)
    return result, text, detected
