"""`vla3d calibrate ACTION`: ChArUco camera calibration (algorithms: `vla3d_ros.calibration`).

  board        write the board image to print (and its dimensions)
  intrinsics   images (folder or bag topic) -> camera_info YAML (camera_calibration_parsers format)
  handeye      images + end-effector poses (sample folder or bag) + camera_info -> extrinsics YAML
  collect      live: a node that saves a sample (image + TF end-effector pose) on each ~/capture call
  sim-capture  the simulator shows the board to a camera -> a sample folder (+ truth.yaml)
  monitor-eval the calibration health monitor in the simulator: false alarms, smallest offset
               detected, detection delay
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

HELP = "calibrate cameras with a ChArUco board: intrinsics, hand-eye extrinsics, live sample collection"


def _board_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--squares", default=None, metavar="XxY",
                        help="board squares across x down y (default 5x7, or the sample folder's board)")
    parser.add_argument("--square-length", type=float, default=None, help="square side in metres (default 0.04)")
    parser.add_argument("--marker-length", type=float, default=None, help="marker side in metres (default 0.03)")
    parser.add_argument("--dictionary", default=None, help="ArUco dictionary (default DICT_4X4_50)")


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="sample folder (samples.yaml + images) or a folder of images")
    source.add_argument("--bag", type=Path, help="rosbag2 bag (directory, .mcap or .db3)")
    parser.add_argument("--topic", help="image topic in the bag (Image or CompressedImage)")
    parser.add_argument("--every", type=int, default=1, help="use every N-th image of the bag (default 1)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True,
                                    parser_class=type(parser))
    board = actions.add_parser("board", help="write the board image to print")
    _board_arguments(board)
    board.add_argument("--out", type=Path, required=True, help="PNG to write")
    board.add_argument("--dpi", type=int, default=300, help="print resolution (default 300)")

    intrinsics = actions.add_parser("intrinsics", help="images -> camera_info YAML")
    _source_arguments(intrinsics)
    _board_arguments(intrinsics)
    intrinsics.add_argument("--camera", required=True, help="camera name written into the YAML")
    intrinsics.add_argument("--distortion", choices=("plumb_bob", "none"), default="plumb_bob",
                            help="plumb_bob (k1 k2 p1 p2) or none (rectified images)")
    intrinsics.add_argument("--out", type=Path, required=True, help="camera_info YAML to write")

    handeye = actions.add_parser("handeye", help="images + EE poses -> extrinsics YAML")
    _source_arguments(handeye)
    _board_arguments(handeye)
    handeye.add_argument("--mount", choices=("eye_to_hand", "eye_in_hand"), required=True,
                         help="eye_to_hand: fixed camera, board on the gripper; eye_in_hand: wrist camera")
    handeye.add_argument("--camera-info", type=Path, required=True, help="the camera's camera_info YAML")
    handeye.add_argument("--camera", required=True, help="camera name (as in the runtime YAML)")
    handeye.add_argument("--base-frame", default=None, help="robot base frame (default: the sample folder's)")
    handeye.add_argument("--ee-frame", default=None, help="end-effector frame (default: the sample folder's)")
    handeye.add_argument("--camera-frame", default=None, help="camera optical frame (default <camera>_optical)")
    handeye.add_argument("--method", default="park", help="OpenCV hand-eye method: park, tsai, horaud, andreff, "
                                                          "daniilidis (default park)")
    handeye.add_argument("--out", type=Path, required=True, help="extrinsics YAML to write")

    collect = actions.add_parser("collect", help="live sample collection node (std_srvs/Trigger ~/capture)")
    _board_arguments(collect)
    collect.add_argument("--config", type=Path, required=True, help="runtime YAML (topics, frames)")
    collect.add_argument("--camera", required=True, help="camera to collect from")
    collect.add_argument("--out", type=Path, required=True, help="new sample folder")
    collect.add_argument("--use-sim-time", action="store_true", help="follow /clock")

    sim = actions.add_parser("sim-capture", help="simulated calibration session -> sample folder")
    sim.add_argument("--camera", choices=("front", "side", "wrist"), required=True)
    sim.add_argument("--views", type=int, default=12, help="board views (default 12)")
    sim.add_argument("--image-size", default="480x640", metavar="HxW", help="image size (default 480x640)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--out", type=Path, required=True, help="new sample folder")

    monitor = actions.add_parser("monitor-eval", help="measure the calibration health monitor in the simulator")
    monitor.add_argument("--episodes", type=int, default=2, help="episodes of frames (default 2)")
    monitor.add_argument("--steps", type=int, default=5, help="frames (monitor checks) per episode (default 5)")
    monitor.add_argument("--steps-between", type=int, default=1,
                         help="random control steps of arm motion between two frames (default 1; a robot "
                              "controlled at control_hz and checked at check_hz moves control_hz / check_hz)")
    monitor.add_argument("--arm-motion", choices=("random", "expert"), default="random",
                         help="how the arm moves between frames: a random walk from home (hovering above the "
                              "table) or push_to_zone's scripted expert at work (down at the cans, pushing "
                              "them across the table); default random")
    monitor.add_argument("--image-size", type=int, default=256, help="square image size (default 256)")
    monitor.add_argument("--translations", default="0.5,1,1.5,2,3", help="offsets to try, cm (comma-separated)")
    monitor.add_argument("--rotations", default="0.5,1,1.5,2,3", help="offsets to try, deg (comma-separated)")
    monitor.add_argument("--no-arm", action="store_true", help="the cross-view check alone (no arm check)")
    monitor.add_argument("--all-windows", action="store_true",
                         help="try every offset on every window of consecutive + 1 frames (default: one window each)")


def _fail(message: str) -> int:
    print(f"vla3d calibrate: error: {message}", file=sys.stderr)
    return 2


def _board(args, fallback=None):
    from vla3d_ros.calibration.board import CharucoBoardSpec

    base = fallback or CharucoBoardSpec()
    changes = {}
    if args.squares:
        try:
            changes["squares_x"], changes["squares_y"] = (int(v) for v in args.squares.lower().split("x"))
        except ValueError:
            raise ValueError(f"--squares must look like 5x7, got {args.squares!r}") from None
    for name in ("square_length", "marker_length", "dictionary"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    return dataclasses.replace(base, **changes)


def _samples(args, *, ee_frame: str = "", base_frame: str = ""):
    from vla3d_ros.calibration.samples import SampleFolder, load_sample_folder, read_bag_samples

    if args.images is not None:
        return load_sample_folder(args.images)
    if not args.topic:
        raise ValueError("--bag needs --topic (the image topic)")
    return SampleFolder(read_bag_samples(args.bag, args.topic, base_frame=base_frame, ee_frame=ee_frame,
                                         every=args.every))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def run(args: argparse.Namespace) -> int:
    try:
        return _ACTIONS[args.action](args)
    except KeyError as error:   # an unknown camera name: the message is the key error's argument
        return _fail(str(error.args[0]))
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        return _fail(str(error))


def _run_board(args) -> int:
    import cv2

    board = _board(args)
    pixels = round(args.dpi * board.square_length / 0.0254)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), board.image(pixels_per_square=pixels)):
        raise ValueError(f"cannot write {args.out} (use a .png name)")
    width, height = board.size
    print(f"wrote {args.out}: print at 100 % ({1000 * width:.0f} x {1000 * height:.0f} mm at {args.dpi} dpi), "
          f"then measure a square: pass its side with --square-length (and the marker's with --marker-length)")
    return 0


def _run_intrinsics(args) -> int:
    from vla3d_ros.calibration.pipeline import intrinsics_from_samples

    folder = _samples(args)
    result, text, detected = intrinsics_from_samples(folder.samples, _board(args, folder.board), args.camera,
                                                     distortion_model=args.distortion)
    _write(args.out, text)
    print(detected.summary())
    print(result.summary())
    print(f"wrote {args.out}")
    return 0


def _run_handeye(args) -> int:
    from vla3d_ros.calibration.intrinsics import load_camera_info_yaml
    from vla3d_ros.calibration.pipeline import hand_eye_from_samples

    if not args.camera_info.is_file():
        raise FileNotFoundError(f"--camera-info {args.camera_info} does not exist")
    camera_info = load_camera_info_yaml(args.camera_info.read_text(), str(args.camera_info))
    if args.bag is not None and not (args.base_frame and args.ee_frame):
        raise ValueError("--bag needs --base-frame and --ee-frame (the /tf transform of the end effector)")
    folder = _samples(args, ee_frame=args.ee_frame or "", base_frame=args.base_frame or "")
    base_frame = args.base_frame or folder.base_frame or "base_link"
    ee_frame = args.ee_frame or folder.ee_frame or "ee_link"
    result, text, detected = hand_eye_from_samples(
        folder.samples, _board(args, folder.board), camera_info, mount=args.mount,
        parent_frame=base_frame if args.mount == "eye_to_hand" else ee_frame,
        child_frame=args.camera_frame or f"{args.camera}_optical", camera_name=args.camera, method=args.method)
    _write(args.out, text)
    print(detected.summary())
    print(text, end="")
    print(f"wrote {args.out}")
    return 0


def _run_collect(args) -> int:
    from vla3d_ros.ros.calibration_collector import run_collector

    return run_collector(args.config, args.camera, args.out, _board(args), use_sim_time=args.use_sim_time)


def _run_sim_capture(args) -> int:
    import numpy as np
    import yaml

    from vla3d_ros.calibration.handeye import extrinsics_block
    from vla3d_ros.calibration.samples import SampleFolderWriter
    from vla3d_ros.geometry import invert_transform
    from vla3d_ros.sim.calibration_views import capture_board_views, ee_matrix
    from vla3d_ros.sim.env import TabletopEnv
    from vla3d_ros.sim.scene import CALIBRATION_BOARD

    try:
        height, width = (int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--image-size must look like 480x640, got {args.image_size!r}") from None
    wrist = args.camera == "wrist"
    writer = SampleFolderWriter(args.out, args.camera, CALIBRATION_BOARD, base_frame="world", ee_frame="ee_site")
    env = TabletopEnv("push_to_zone", image_size=(height, width), cameras=(args.camera,),
                      calibration_board="table" if wrist else "hand")
    try:
        truth = env.reset(seed=args.seed)
        T_base_cam = truth.T_base_cam[0]
        X = invert_transform(ee_matrix(env)) @ T_base_cam if wrist else T_base_cam
        views = capture_board_views(env, args.camera, args.views, np.random.default_rng(args.seed))
    finally:
        env.close()
    for view in views:
        writer.add(view.rgb, view.T_base_ee, stamp=0.0)
    what = "T_ee_cam" if wrist else "T_base_cam"
    _write(args.out / "truth.yaml", "# the simulator's calibration of this camera (to compare with)\n" +
           yaml.safe_dump({"K": truth.intrinsics[0].tolist(), what: extrinsics_block(X)}, default_flow_style=None))
    print(f"wrote {len(views)} views of camera {args.camera!r} to {args.out} (truth in {args.out / 'truth.yaml'})")
    return 0


def _run_monitor_eval(args) -> int:
    from vla3d_ros.evaluate.calibration_health import evaluate_monitor, render_frames
    from vla3d_ros.runtime.config import CalibrationMonitorConfig

    if args.episodes < 1 or args.steps < 4 or args.steps_between < 1:
        raise ValueError(f"need --episodes >= 1, --steps >= 4 and --steps-between >= 1, got {args.episodes}, "
                         f"{args.steps} and {args.steps_between}")
    try:
        translations = [float(v) for v in args.translations.split(",") if v]
        rotations = [float(v) for v in args.rotations.split(",") if v]
    except ValueError:
        raise ValueError(f"--translations / --rotations must be comma-separated numbers, got "
                         f"{args.translations!r} / {args.rotations!r}") from None
    config = CalibrationMonitorConfig(enabled=True)
    frames, surface = render_frames(args.episodes, args.steps, args.image_size, config,
                                    steps_between=args.steps_between, motion=args.arm_motion)
    print(evaluate_monitor(frames, config, None if args.no_arm else surface, translations_cm=translations,
                           rotations_deg=rotations, all_windows=args.all_windows).table())
    return 0


_ACTIONS = {"monitor-eval": _run_monitor_eval, "board": _run_board, "intrinsics": _run_intrinsics, "handeye": _run_handeye, "collect": _run_collect,
            "sim-capture": _run_sim_capture}
