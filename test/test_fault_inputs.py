"""Fault injection on the sensor side, through the real graph (camera_sync + inference + action) over
loopback DDS with a tiny checkpoint and a running bag recording (see fault_rig.py).

Every case starts from a healthy, armed graph that moves the arm, injects the fault and checks:
the fault is named on /diagnostics and in the node's log (/rosout); where the input is unusable the
command topic holds (only zero twists for a window, and no chunk is computed from a faulty set);
where the input is degraded but usable the graph keeps going with finite commands; the node
recovers once the input is healthy again; and the bag recording lost no message.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from fault_rig import SIZE, FaultRig, checkpoint, conclude, is_zero  # noqa: F401 (fixture)
from vla3d_ros.ros import conversions as conv
from vla3d_ros.ros.tf import MAX_DYNAMIC_AGE
from vla3d_ros.runtime import images

@pytest.fixture
def rig(ros_context, tmp_path, checkpoint, monkeypatch, capfd):
    rig = FaultRig(ros_context, tmp_path, checkpoint, monkeypatch, console=capfd)
    yield rig
    rig.destroy()


# ---- mutations: (camera, stream, msg) -> msg, or None = withheld ------------------------------------

def only(camera: str, stream: str, change):
    def mutate(cam, strm, msg):
        return change(msg) if (cam, strm) == (camera, stream) else msg
    return mutate


def set_fields(**values):
    def change(msg):
        for key, value in values.items():
            setattr(msg, key, value)
        return msg
    return change


def reencode_depth(camera: str, encoding: str):
    """The camera's depth in the other encoding: a driver reconfigured behind the config's back."""
    def change(msg):
        metres = np.full((msg.height, msg.width), 0.8, np.float32)
        new = conv.depth_to_image(metres, encoding, frame_id=msg.header.frame_id)
        new.header = msg.header
        return new
    return only(camera, "depth", change)


def oversized_front(camera, stream, msg):
    """front at 64x64 (color and CameraInfo agree) while the image cap is 8 KiB."""
    if camera != "front" or stream == "depth":
        return msg
    if stream == "camera_info":
        msg.width = msg.height = 64
        return msg
    big = conv.array_to_image(np.zeros((64, 64, 3), np.uint8), "rgb8", frame_id=msg.header.frame_id)
    big.header = msg.header
    return big


@dataclass
class Case:
    mutate: object                 # the mutation applied to every set while the fault lasts
    diagnostic: str                # text of the "node: status" line on /diagnostics
    node: str                      # the node that must say it
    log: str | None                # text of the log line (None = same as `diagnostic`)
    detail: str = ""


UNUSABLE = {
    "wrong color encoding": Case(only("front", "color", set_fields(encoding="yuv422")),
                                 "color image encoding 'yuv422' is not supported", "vla3d_inference", None),
    "image size != CameraInfo size": Case(only("front", "camera_info", set_fields(width=48, height=24)),
                                          "color image is 32x32 but its CameraInfo says 48x24",
                                          "vla3d_inference", None),
    "depth 16UC1 where config says 32FC1": Case(reencode_depth("front", "16UC1"),
                                                "depth encoding '16UC1' but the config says '32FC1'",
                                                "vla3d_inference", None),
    "depth 32FC1 where config says 16UC1": Case(reencode_depth("wrist", "32FC1"),
                                                "depth encoding '32FC1' but the config says '16UC1'",
                                                "vla3d_inference", None),
    "K all zeros": Case(only("front", "camera_info", set_fields(k=np.zeros(9))),
                        "invalid CameraInfo", "vla3d_camera_sync", None),
    "K non-finite": Case(only("front", "camera_info", set_fields(k=np.array([np.nan, 0, 16, 0, 30, 16, 0, 0, 1.0]))),
                         "invalid CameraInfo", "vla3d_camera_sync", None),
    "CameraInfo missing": Case(only("front", "camera_info", lambda msg: None), "front/camera_info: silent for",
                               "vla3d_camera_sync", "silent"),
    "camera silent, then back": Case(lambda cam, strm, msg: None if cam == "wrist" else msg,
                                     "wrist/color: silent for", "vla3d_camera_sync", "silent"),
    "oversized image": Case(oversized_front, "12288 bytes exceeds the 8192-byte cap", "vla3d_inference", None,
                            detail="cap lowered to 8 KiB for the test; 64 MiB in production"),
}


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_unusable_input_holds_says_why_and_recovers(rig, case, monkeypatch):
    spec = UNUSABLE[case]
    # The real cap is 64 MiB; 8 KiB lets a 12 KiB image stand for an oversized one (32x32 fits).
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 8192)
    rig.start_running()
    rig.inject(lambda robot, stamp: robot.publish_set(stamp, spec.mutate))
    # The rows of the last good chunk may still run out (at most horizon x step + command timeout);
    # then the arm must hold for as long as the fault lasts.
    said = rig.wait_for(lambda: rig.diagnostic(spec.diagnostic, spec.node) and rig.held()
                        and rig.pre_fault_chunks_expired(), timeout=6.0)
    status = rig.diagnostic(spec.diagnostic, spec.node)
    assert status is not None, \
        f"{case}: {spec.diagnostic!r} never on /diagnostics; last: {[s.message for s in rig.diagnostics[-6:]]}"
    time_to_hold = rig.time_to_hold()
    commands, moving = rig.held_throughout(0.4)
    late_chunks = len(rig.chunks_after_fault())
    assert said and commands >= 5 and moving == 0 and late_chunks == 0, \
        f"{case}: not held: {moving}/{commands} moving commands, {late_chunks} chunks from faulty sets"
    log = rig.log(spec.log or spec.diagnostic, spec.node)
    assert log is not None, f"{case}: not in the log; recent: {[entry.msg for entry in rig.logs[-4:]]}"
    hold_reason = rig.graph["action"].controller.last_decision.reason
    rig.inject(None)
    assert rig.wait_recovered(), f"{case}: the graph did not recover"
    conclude(rig, case, diagnostic=status, log=log,
             command=f"zero twist within {time_to_hold:.2f} s ({hold_reason})", recovered=True, detail=spec.detail)


# ---- degraded but usable input: the graph keeps going -------------------------------------------------

BAD_ROWS = {"nan": (0, 4), "inf": (4, 8), "zero": (8, 12), "negative": (12, 16)}   # front depth rows


def invalid_depth_pixels(camera, stream, msg):
    """front (32FC1): rows of NaN, +inf, 0 and -1 m; wrist (16UC1): a block of 0 (= no return)."""
    if stream != "depth":
        return msg
    if camera == "front":
        metres = np.frombuffer(bytes(msg.data), np.float32).reshape(SIZE, SIZE).copy()
        for kind, value in zip(BAD_ROWS, (np.nan, np.inf, 0.0, -1.0)):
            metres[slice(*BAD_ROWS[kind])] = value
    else:
        metres = np.frombuffer(bytes(msg.data), np.uint16).reshape(SIZE, SIZE).copy()
        metres[:8, :8] = 0
    msg.data = metres.tobytes()
    return msg


def test_invalid_depth_pixels_become_nan_and_the_graph_keeps_going(rig):
    rig.start_running()
    rig.inject(lambda robot, stamp: robot.publish_set(stamp, invalid_depth_pixels))
    assert rig.wait_for(lambda: len(rig.chunks_after_fault()) >= 3), "no chunks from sets with invalid depth pixels"
    obs = rig.graph["camera_sync"].observation("pick up the red cube")
    expected = np.zeros((2, SIZE, SIZE), bool)
    expected[0, :16] = True
    expected[1, :8, :8] = True
    # Exactly the invalid pixels are NaN (one "invalid" value downstream), every other depth is kept.
    np.testing.assert_array_equal(np.isnan(obs.depth), expected)
    assert np.all(obs.depth[~expected] > 0.39)
    commands, moving = rig.held_throughout(0.3)
    linear = [(t.twist.linear.x, t.twist.linear.y, t.twist.linear.z) for t in rig.twists[-commands:]]
    assert commands >= 3 and np.all(np.isfinite(linear))
    conclude(rig, "depth NaN / inf / 0 / negative pixels", diagnostic=None, log=None,
             command=f"keeps moving on the valid pixels ({moving}/{commands} commands moving, all finite); "
                     "invalid pixels decode to NaN exactly")


def all_invalid_depth(camera, stream, msg):
    if stream == "depth" and camera == "front":
        msg.data = np.full((SIZE, SIZE), np.nan, np.float32).tobytes()
    return msg


def test_all_invalid_depth_is_reported(rig):
    rig.start_running()
    rig.inject(lambda robot, stamp: robot.publish_set(stamp, all_invalid_depth))
    assert rig.wait_for(lambda: len(rig.chunks_after_fault()) >= 3), "the graph stopped on an all-invalid depth map"
    assert rig.wait_for(lambda: rig.diagnostic("front: 0.0% valid depth", "vla3d_camera_sync")
                        and rig.log("valid depth", "vla3d_camera_sync")), "an all-invalid depth map went unreported"
    status = rig.diagnostic("valid depth", "vla3d_camera_sync")
    assert "wrist" not in status.message   # only the camera without depth is named
    log = rig.log("valid depth", "vla3d_camera_sync")
    rig.inject(None)
    assert rig.wait_for(lambda: rig.log("depth: OK", "vla3d_camera_sync")), "no all-clear once depth is back"
    conclude(rig, "depth map entirely invalid", diagnostic=status, log=log,
             command="keeps running (RGB-only fallback for that view); WARN until depth is back, then OK")


def burst_then_reordered(robot, stamp):
    """4 sets within 3 ms, then one set 20 ms older than the newest (arrives out of order)."""
    for offset in (0.003, 0.002, 0.001, 0.0):
        robot.publish_set(stamp - offset)
    robot.publish_set(stamp - 0.02)


def test_bursts_and_reordered_stamps_are_dropped_counted_and_logged(rig):
    rig.start_running()
    rig.inject(burst_then_reordered)
    assert rig.wait_for(lambda: len(rig.chunks_after_fault()) >= 3 and rig.log("out-of-order stamp")), \
        "bursts stopped the graph, or the reordered set was not logged"
    sync = rig.graph["camera_sync"]
    queue_size = rig.config.sync.queue_size
    depths = [sync.assembler.queue_depth(*key) for key in sync.assembler.inputs]
    assert max(depths) <= queue_size
    assert rig.wait_for(lambda: any(s.name.endswith("front/color") and int(dict(
        (kv.key, kv.value) for kv in s.values)["dropped"]) > 0 for s in rig.diagnostics[rig.marks["diagnostics"]:]))
    status = next(s for s in reversed(rig.diagnostics) if s.name.endswith("front/color"))
    values = {kv.key: kv.value for kv in status.values}
    conclude(rig, "bursts and reordered stamps", diagnostic=status, log=rig.log("out-of-order stamp"),
             command="keeps moving on the newest set; out-of-order sets dropped",
             detail=f"dropped={values['dropped']} queue_depth<={queue_size}")


# ---- calibration missing -------------------------------------------------------------------------------

def test_extrinsics_missing_at_startup_hold_until_tf_arrives(rig):
    rig.robot.tf_cameras.discard("wrist")
    rig.start_recording()
    rig.arm()
    rig.inject(None)
    # Both nodes say it, each on its own diagnostics timer: wait for both.
    assert rig.wait_for(lambda: rig.diagnostic("extrinsics missing", "vla3d_inference") and rig.held(5)
                        and rig.diagnostic("wrist: extrinsics missing", "vla3d_camera_sync"))
    status = rig.diagnostic("extrinsics missing", "vla3d_inference")
    assert not rig.chunks and all(is_zero(t) for t in rig.twists)
    log = rig.log("extrinsics missing", "vla3d_inference")
    assert log is not None
    hold_reason = rig.graph["action"].controller.last_decision.reason
    rig.robot.tf_cameras.add("wrist")
    assert rig.wait_recovered()
    conclude(rig, "extrinsics missing (no TF for a camera)", diagnostic=status, log=log,
             command=f"zero twist ({hold_reason})", recovered=True)


def test_extrinsics_lost_mid_run_hold(rig):
    rig.start_running()
    rig.robot.tf_cameras.discard("wrist")
    rig.inject(None)
    assert rig.wait_for(lambda: rig.diagnostic("'wrist': extrinsics missing", "vla3d_inference") and rig.held(5)
                        and rig.pre_fault_chunks_expired()), "the wrist lost its pose but the arm was not held"
    status = rig.diagnostic("wrist_optical", "vla3d_inference")
    assert "stale" in status.message, status.message
    # The last wrist pose stays valid for max_dynamic_age (one camera period here), no longer.
    limit = rig.fault_stamp + MAX_DYNAMIC_AGE + 1e-6
    late = [c for c in rig.chunks_after_fault() if conv.time_to_seconds(c.header.stamp) > limit]
    assert not late, f"{len(late)} chunks computed with a wrist pose older than {MAX_DYNAMIC_AGE} s"
    assert len(rig.console_logs("wrist_optical", "vla3d_inference")) <= 3, "a log line per inference"
    log = rig.log("wrist_optical", "vla3d_inference")
    assert log is not None
    hold_reason = rig.graph["action"].controller.last_decision.reason
    rig.robot.tf_cameras.add("wrist")
    assert rig.wait_recovered()
    conclude(rig, "extrinsics lost mid-run (wrist TF stops)", diagnostic=status, log=log,
             command=f"zero twist ({hold_reason}); the stale wrist pose is refused", recovered=True)


# ---- clock jumping backwards (a looping bag, a restarted simulator) -----------------------------------

@pytest.fixture
def sim_rig(ros_context, tmp_path, checkpoint, monkeypatch, capfd):
    rig = FaultRig(ros_context, tmp_path, checkpoint, monkeypatch, console=capfd, use_sim_time=True)
    yield rig
    rig.destroy()


def test_clock_jumping_back_resets_sync_holds_and_recovers(sim_rig):
    rig = sim_rig
    rig.start_running()

    def jump(robot, stamp):
        robot.sim_now -= 10.0
        robot.fault = None
        robot.publish_set(robot.now())
    rig.inject(jump)
    sync = rig.graph["camera_sync"]
    before_jump = rig.fault_stamp - 5.0

    def new_timeline_twists():
        return [t for t in rig.twists[rig.marks["twists"]:] if conv.time_to_seconds(t.header.stamp) < before_jump]
    assert rig.wait_for(lambda: sync.assembler.clock_jumps >= 1 and new_timeline_twists())
    # The chunks of the old timeline now lie 10 s in the future: the first command after the jump holds.
    first = new_timeline_twists()[0]
    assert is_zero(first)
    assert rig.wait_recovered(), "no motion on the new timeline"
    status = next(s for s in reversed(rig.diagnostics) if s.name.endswith("sync"))
    values = {kv.key: kv.value for kv in status.values}
    assert int(values["clock_jumps"]) >= 1
    conclude(rig, "clock jumps back 10 s (bag loop)", diagnostic=status, log=rig.log("jump") or rig.log("future"),
             command="zero twist (the old timeline's chunks lie 10 s in the future), then moves on the new timeline",
             detail=f"clock_jumps={values['clock_jumps']}", recovered=True)
