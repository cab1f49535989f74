"""DDS benchmarks of the live graph: node overhead, end-to-end latency, sustained camera load.

The graph under test is the real one (`graph.build_graph`, roles camera_sync + inference, the
real checkpoint loader on a random-weight checkpoint of the chosen preset). Cameras are three
640x480 RGB-D cameras (rgb8 + 16UC1 millimetre depth + CameraInfo, as RealSense drivers publish)
showing a synthetic tabletop scene; all messages of one set carry one stamp (a hardware-synced rig).

- `node_overhead`: in one process, no DDS: the sync node's own subscription callbacks are called
  with the 9 camera messages (+ joint state, gripper), then `observation()` (decode + calibration
  + build), the policy runner's conversion to input tensors, the runtime `PolicyRunner` with a
  policy that returns a stored model output (the model excluded), and the ActionChunk message.
- `dds_benchmarks`: a publisher PROCESS (this module's `main`) sends camera sets over loopback
  DDS to the graph in this process and receives the ActionChunks back, so one clock measures
  "last frame of a set published -> its ActionChunk received" (`e2e`, inference triggered by each
  set); then 3 cameras x 30 Hz for a fixed duration with the inference node on its timer
  (`sustained`): sets published vs synchronised, per-stream DDS losses, sync queue depths and
  chunk age sampled over time (a positive age slope = a queue growing somewhere), CPU use of both
  processes.

The publisher process and why the harness cannot hang:
- This process serialises the camera set once (`write_message_file`); the publisher replays it,
  importing rclpy and the message packages but not torch or the model (`model_latency` is
  imported inside this process's functions for that reason). One publisher process serves both
  phases: a JSON command per phase on its stdin, a JSON reply line on its stdout; its stderr goes
  to a file, so no pipe can fill up.
- Every wait is bounded and says what it waited for: startup, DDS matching, priming, each phase,
  the teardown. The publisher's faulthandler watchdog dumps its stacks into its stderr and exits
  before this process's deadline, which then kills it and quotes that stderr.
- Fast DDS 3.2's TCP transport (part of LARGE_DATA, the bench's transport) can block forever
  deleting a participant while a connected participant is alive and silent:
  `TCPChannelResourceBasic::disconnect` waits for the channel's read mutex, which the channel's
  listening thread holds in a blocking recv() (fixed upstream in eProsima/Fast-DDS#6066). The old
  harness met it twice: its publisher deleted its participant while the graph was alive (seen
  hanging until the 182 s phase timeout), and rclpy's `LifecycleNode.destroy_node` leaves the
  node alive (see `destroy_graph`), so a garbage-collector pass deleted the e2e graph's
  participant during the sustained phase, holding the GIL (seen in gdb: the whole bench process
  frozen, its main thread waiting for the GIL). Now this process keeps ONE participant for both
  phases (a host node keeps it alive while the phase graphs come and go), `destroy_graph` frees
  every node at once, the publisher deletes its participant under its watchdog, and this process
  deletes its own only after the publisher has exited.
"""
from __future__ import annotations

import argparse
import faulthandler
import functools
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64

from vla3d_ros.bench.stats import CpuWindow, peak_rss_mb, summarize
from vla3d_ros.geometry import matrix_to_quaternion_xyzw
from vla3d_ros.model.config import preset
import vla3d_ros.msg
from vla3d_ros.ros import conversions
from vla3d_ros.ros import topics
from vla3d_ros.ros.graph import NodeGraph, build_graph
from vla3d_ros.ros.inference_node import load_checkpoint_policy
from vla3d_ros.ros.qos import RELIABLE_QOS, SENSOR_QOS
from vla3d_ros.runtime.calibration import CameraCalibration
from vla3d_ros.runtime.config import RuntimeConfig
from vla3d_ros.runtime.policy_runner import PolicyRunner
from vla3d_ros.types import EE_DELTA_ACTION_NAMES, Observation

CAMERAS = ("front", "side", "wrist")   # the first three; more views are named camera3, camera4, ...
BASE_FRAME, EE_FRAME = "world", "ee"
JOINT_TOPIC = "/bench/joint_states"
JOINT_NAMES = tuple(f"joint{i}" for i in range(1, 8))
INSTRUCTION = "put the red block on the green block"

# Bounds of the publisher process (seconds). Its watchdog fires first; this process allows
# WATCHDOG_MARGIN more before killing it, so a stuck publisher leaves its stacks in its stderr.
MATCH_TIMEOUT = 20.0       # DDS discovery + matching of every publisher and the chunk subscription
PRIME_TIMEOUT = 60.0       # until the first ActionChunk answers a set of the phase
STARTUP_TIMEOUT = 60.0     # imports, rclpy.init, the node and its endpoints
TEARDOWN_TIMEOUT = 10.0    # deleting the publisher's node and DDS participant
WATCHDOG_MARGIN = 15.0
KILL_TIMEOUT = 5.0
IDLE_GAP = 1.0             # between priming and the measured window: the graph settles, counters are sampled


# ---- the scene, the config and the messages ------------------------------------------------------


def bench_observation(preset_name: str, seed: int = 0) -> Observation:
    """The 3-camera 640x480 RGB-D observation the publisher sends (deterministic in `seed`)."""
    from vla3d_ros.bench.model_latency import deploy_observation

    return deploy_observation(preset(preset_name), seed=seed)


def camera_names(obs: Observation) -> tuple[str, ...]:
    """One camera per view of the policy (3 for the cpu and gpu presets)."""
    return tuple(CAMERAS[i] if i < len(CAMERAS) else f"camera{i}" for i in range(obs.num_views))


def camera_topics(name: str) -> dict[str, str]:
    return {"color": f"/bench/{name}/color", "camera_info": f"/bench/{name}/camera_info",
            "depth": f"/bench/{name}/depth"}


def bench_config(obs: Observation, inference_hz: float, queue_size: int = 5, precision: str = "auto") -> RuntimeConfig:
    """Runtime config of the bench cameras: fixed extrinsics (no TF), 16UC1 depth."""
    cameras = []
    for name, T in zip(camera_names(obs), obs.T_base_cam):
        cameras.append({"name": name, "frame_id": f"{name}_optical", "topics": camera_topics(name),
                        "depth_encoding": "16UC1",
                        "extrinsics": {"xyz": [float(v) for v in T[:3, 3]],
                                       "quat_xyzw": [float(v) for v in matrix_to_quaternion_xyzw(T[:3, :3])]}})
    return RuntimeConfig.from_dict({
        "base_frame": BASE_FRAME, "ee_frame": EE_FRAME, "joint_state_topic": JOINT_TOPIC,
        "joint_names": list(JOINT_NAMES), "instruction": INSTRUCTION, "cameras": cameras,
        "sync": {"slop": 0.005, "queue_size": queue_size},
        "rates": {"inference_hz": inference_hz, "control_hz": 30.0, "diagnostics_hz": 1.0},
        "watchdog": {"observation_timeout": 1.0, "command_timeout": 0.2, "camera_timeout": 2.0},
        "device": "cpu", "precision": precision,
    })


def camera_messages(obs: Observation) -> dict[str, tuple[Image, Image, CameraInfo]]:
    """(color rgb8, depth 16UC1 mm, CameraInfo) per camera; restamp with `stamp_messages`."""
    height, width = obs.rgb.shape[1:3]
    messages = {}
    for view, name in enumerate(camera_names(obs)):
        frame = f"{name}_optical"
        millimetres = np.nan_to_num(obs.depth[view] * 1000.0, nan=0.0).clip(0, 65535).round().astype(np.uint16)
        calibration = CameraCalibration(obs.intrinsics[view], width, height)
        messages[name] = (conversions.array_to_image(obs.rgb[view], "rgb8", frame_id=frame),
                          conversions.array_to_image(millimetres, "16UC1", frame_id=frame),
                          conversions.calibration_to_camera_info(calibration, frame_id=frame))
    return messages


def proprio_messages(obs: Observation) -> tuple[JointState, Float64]:
    return conversions.arrays_to_joint_state(JOINT_NAMES, obs.joint_positions), Float64(data=float(obs.gripper))


def stamp_messages(messages, stamp: float) -> None:
    """Set the header stamp of every message that has a header (Float64 has none)."""
    time_msg = conversions.seconds_to_time(stamp)
    for msg in messages:
        if hasattr(msg, "header"):
            msg.header.stamp = time_msg


def camera_set(obs: Observation) -> list[tuple[str, object, int]]:
    """One camera set in publish order as (topic, message, device): the joint state and the gripper
    opening, then color, depth and CameraInfo of each camera (device = camera index; the arm's
    messages go with camera 0)."""
    messages = camera_messages(obs)
    joint_msg, gripper_msg = proprio_messages(obs)
    entries = [(JOINT_TOPIC, joint_msg, 0), (topics.GRIPPER_OPENING, gripper_msg, 0)]
    for device, name in enumerate(camera_names(obs)):
        names_of = camera_topics(name)
        entries += [(names_of[kind], msg, device)
                    for kind, msg in zip(("color", "depth", "camera_info"), messages[name])]
    return entries


MESSAGE_TYPES = {f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}": cls
                 for cls in (CameraInfo, Float64, Image, JointState)}


def write_message_file(obs: Observation, path: Path) -> Path:
    """`camera_set(obs)` serialised (CDR) for the publisher process: a JSON line listing
    topic, type, device and byte count of each message, then the messages' bytes in that order."""
    index, payload = [], []
    for topic, msg, device in camera_set(obs):
        data = serialize_message(msg)
        type_name = next(name for name, cls in MESSAGE_TYPES.items() if isinstance(msg, cls))
        index.append({"topic": topic, "type": type_name, "device": device, "bytes": len(data)})
        payload.append(data)
    with open(path, "wb") as handle:
        handle.write(json.dumps(index).encode() + b"\n")
        for data in payload:
            handle.write(data)
    return Path(path)


def read_message_file(path: Path) -> list[tuple[str, object, int]]:
    """The (topic, message, device) list `write_message_file` wrote; ValueError naming what is wrong."""
    with open(path, "rb") as handle:
        index = json.loads(handle.readline())
        entries = []
        for entry in index:
            cls = MESSAGE_TYPES.get(entry["type"])
            if cls is None:
                raise ValueError(f"{path}: message type {entry['type']!r} is not one of {sorted(MESSAGE_TYPES)}")
            data = handle.read(entry["bytes"])
            if len(data) != entry["bytes"]:
                raise ValueError(f"{path}: {entry['topic']} is truncated ({len(data)} of {entry['bytes']} bytes)")
            entries.append((entry["topic"], deserialize_message(data, cls), int(entry["device"])))
        if handle.read(1):
            raise ValueError(f"{path}: bytes left after the {len(index)} messages of its index")
    return entries


def ee_transform(obs: Observation) -> np.ndarray:
    return conversions.pose_to_matrix(obs.ee_pose.astype(np.float64))


def save_bench_checkpoint(preset_name: str, directory: Path, seed: int = 0) -> Path:
    """A random-weight checkpoint of the preset (what the inference node loads at configure)."""
    import torch

    from vla3d_ros.model.checkpoint import save_checkpoint
    from vla3d_ros.model.policy import VLA3DPolicy

    torch.manual_seed(seed)
    return save_checkpoint(directory, VLA3DPolicy(preset(preset_name)), step_period=0.1)


def bench_policy_loader(instruction_dim: int = 384):
    """The real checkpoint loader with the stand-in sentence encoder (no multi-second model load)."""
    from vla3d_ros.bench.model_latency import HashInstructionEncoder

    return functools.partial(load_checkpoint_policy, instruction_encoder=HashInstructionEncoder(instruction_dim))


def destroy_graph(graph: NodeGraph) -> None:
    """`graph.destroy()`, plus what rclpy's `LifecycleNode.destroy_node` leaves alive.

    rclpy's lifecycle state machine holds the rcl node, so after `destroy_node` an inference node
    stays in the DDS graph (and keeps its context's participant) until the garbage collector
    frees it: at any allocation, on any thread, holding the GIL (measured: such a pass deleted a
    participant during the next phase and froze the process, see the module docstring).
    """
    lifecycle_nodes = [node for node in graph.all_nodes() if isinstance(node, LifecycleNode)]
    graph.destroy()
    for node in lifecycle_nodes:
        node._state_machine.destroy_when_not_in_use()


# ---- node overhead (in process, no DDS, model excluded) ------------------------------------------


class StoredOutputPolicy:
    """`infer(obs)`: the model runner's conversion to input tensors, then a stored model output.

    Everything the node does around the model is kept (observation -> tensors -> runner checks);
    only the forward pass is replaced by its recorded result.
    """

    def __init__(self, model_runner, output: dict) -> None:
        self.model_runner = model_runner
        self.output = output

    def infer(self, obs: Observation) -> dict:
        import torch

        with torch.inference_mode():
            self.model_runner.batch_from_observation(obs)
        return self.output


def zero_copy_checks(obs: Observation) -> dict:
    """Do decoded images alias the buffers of messages as DDS delivers them (deserialised)?"""
    from vla3d_ros.bench.model_latency import time_calls

    color, depth, _ = camera_messages(obs)[camera_names(obs)[0]]
    delivered_color = deserialize_message(serialize_message(color), Image)
    float_depth = conversions.array_to_image(obs.depth[0].astype(np.float32), "32FC1")  # NaN = no return
    delivered_float = deserialize_message(serialize_message(float_depth), Image)
    rgb = conversions.image_to_rgb(delivered_color)
    metres = conversions.image_to_depth(delivered_float).metres
    build_ms = summarize(time_calls(lambda: conversions.array_to_image(obs.rgb[0], "rgb8"), 20, 2))["p50"]
    decode_ms = summarize(time_calls(lambda: conversions.image_to_rgb(delivered_color), 50, 2))["p50"]
    return {
        "rgb8_decode_is_view": bool(np.shares_memory(rgb, np.frombuffer(delivered_color.data, np.uint8))),
        "depth_32FC1_decode_is_view": bool(np.shares_memory(metres, np.frombuffer(delivered_float.data, np.uint8))),
        "depth_16UC1_decode_is_view": False,  # millimetres -> metres is a conversion: one float32 copy
        "rgb8_decode_ms_p50": decode_ms,
        "rgb8_message_build_ms_p50": build_ms,
    }


def node_overhead(preset_name: str = "cpu", runs: int = 100, warmup: int = 10, seed: int = 0) -> dict:
    """Per-stage and total ms of messages -> observation -> tensors -> ActionChunk message, no model."""
    from vla3d_ros.bench.model_latency import build_runner

    obs = bench_observation(preset_name, seed)
    config = bench_config(obs, inference_hz=30.0)
    messages = camera_messages(obs)
    joint_msg, gripper_msg = proprio_messages(obs)
    model_runner = build_runner(preset(preset_name), seed)
    model_output = model_runner.infer(obs)
    runner = PolicyRunner(StoredOutputPolicy(model_runner, model_output), EE_DELTA_ACTION_NAMES, 0.1)
    context = rclpy.context.Context()
    rclpy.init(context=context)
    graph = None
    try:
        graph = build_graph(config, roles=("camera_sync",), context=context)
        sync = graph["camera_sync"]
        graph.transform_sink(sync).set_transform(BASE_FRAME, EE_FRAME, ee_transform(obs), None)
        callbacks = {sub.topic_name: sub.callback for sub in sync.subscriptions}
        camera_calls = []
        for name in camera_names(obs):
            color, depth, info = messages[name]
            topics_of = camera_topics(name)
            camera_calls += [(callbacks[topics_of["color"]], color), (callbacks[topics_of["depth"]], depth),
                             (callbacks[topics_of["camera_info"]], info)]
        callbacks[JOINT_TOPIC](joint_msg)
        callbacks[topics.GRIPPER_OPENING](gripper_msg)
        stages = {"sync_callbacks": [], "observation": [], "to_tensors_and_runner": [], "chunk_message": [],
                  "total": []}
        start_stamp = time.time()
        for index in range(warmup + runs):
            stamp = start_stamp + index / 30.0
            stamp_messages([msg for _, msg in camera_calls] + [joint_msg], stamp)
            t0 = time.perf_counter()
            for callback, msg in camera_calls:
                callback(msg)
            t1 = time.perf_counter()
            observation = sync.observation(INSTRUCTION)
            t2 = time.perf_counter()
            result = runner.run(observation)
            t3 = time.perf_counter()
            conversions.action_chunk_to_msg(result.chunk, BASE_FRAME)
            t4 = time.perf_counter()
            if abs(observation.stamp - stamp) > 1e-6 or not result.ok:
                raise RuntimeError(f"node overhead run {index}: set {observation.stamp} != {stamp} or "
                                   f"runner failed: {result.status.message}")
            if index >= warmup:
                for key, value in (("sync_callbacks", t1 - t0), ("observation", t2 - t1),
                                   ("to_tensors_and_runner", t3 - t2), ("chunk_message", t4 - t3),
                                   ("total", t4 - t0)):
                    stages[key].append(1000.0 * value)
    finally:
        if graph is not None:
            destroy_graph(graph)
        rclpy.shutdown(context=context)
    with_model_preprocess = summarize(stages["total"])
    without_resize = np.asarray(stages["total"]) - np.asarray(stages["to_tensors_and_runner"])
    return {
        "cameras": obs.num_views, "image": list(obs.rgb.shape[1:3]), "depth_encoding": "16UC1",
        "runs": runs, "stages": {key: summarize(values) for key, values in stages.items()},
        "total": with_model_preprocess,
        "total_without_tensor_conversion": summarize(without_resize),
        "zero_copy": zero_copy_checks(obs),
    }


# ---- the publisher process -----------------------------------------------------------------------


class ReplayPublisher:
    """The publisher process's node: replays a camera set at a rate and receives the ActionChunks.

    `run_phase(spec)`: priming first: sets are published until an ActionChunk answers one of them
    (DDS data channels are set up lazily after discovery and the first best-effort images are
    lost), then an idle gap, then the measured window [window_start, window_end] (time.monotonic,
    which is system-wide on Linux, so the graph process can cut its counters to the same window).
    """

    def __init__(self, messages: list[tuple[str, object, int]], context) -> None:
        self.node = rclpy.create_node("vla3d_bench_publisher", context=context)
        self.messages = [(self.node.create_publisher(type(msg), topic, SENSOR_QOS), msg, device)
                         for topic, msg, device in messages]
        self.chunk_sub = self.node.create_subscription(vla3d_ros.msg.ActionChunk, topics.ACTION_CHUNK, self._on_chunk,
                                                       RELIABLE_QOS)
        self._lock = threading.Lock()
        self._sent: dict[int, float] = {}                    # stamp ns -> perf_counter after the set's last publish
        self._latencies: list[float] = []
        self._chunk_ages: list[tuple[float, float]] = []     # (perf_counter at receipt, receive wall - stamp)
        self._answered = threading.Event()                   # a chunk answered a set of this phase
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def _on_chunk(self, msg: vla3d_ros.msg.ActionChunk) -> None:
        now, wall = time.perf_counter(), time.time()
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self._lock:
            sent_at = self._sent.get(stamp_ns)
            if sent_at is not None:
                self._latencies.append(1000.0 * (now - sent_at))
                self._answered.set()
            self._chunk_ages.append((now, wall - conversions.time_to_seconds(msg.header.stamp)))

    def _clear(self) -> None:
        with self._lock:
            self._sent.clear()
            self._latencies.clear()
            self._chunk_ages.clear()
            self._answered.clear()

    def _all_answered(self, published: int) -> bool:
        """Every set of the measured window has its ActionChunk (inference per set: the drain can
        end early; on a timer most sets are never answered and the drain runs its full length)."""
        with self._lock:
            return len(self._latencies) >= published

    def unmatched_topics(self) -> list[str]:
        """Topics with no DDS peer yet (this node's publishers and its chunk subscription)."""
        missing = [publisher.topic_name for publisher, _, _ in self.messages if publisher.get_subscription_count() == 0]
        return missing + ([self.chunk_sub.topic_name] if self.chunk_sub.get_publisher_count() == 0 else [])

    def publish_set(self, camera_gap: float) -> float:
        """Publish the set stamped now; returns the publish duration (s)."""
        stamp = time.time()
        stamp_time = conversions.seconds_to_time(stamp)
        stamp_messages([msg for _, msg, _ in self.messages], stamp)
        begin = time.perf_counter()
        device = 0
        for publisher, msg, msg_device in self.messages:
            if msg_device != device:
                time.sleep(camera_gap)        # cameras are separate devices, not one 5 MB burst
                device = msg_device
            publisher.publish(msg)
        done = time.perf_counter()
        with self._lock:
            self._sent[stamp_time.sec * 1_000_000_000 + stamp_time.nanosec] = done
        return done - begin

    def run_phase(self, spec: dict) -> dict:
        """Publish at `spec["rate_hz"]` for `num_sets` sets or `duration` s, then wait up to
        `drain` s for the answers (at least `min_drain` s)."""
        deadline = time.monotonic() + spec.get("match_timeout", MATCH_TIMEOUT)
        while self.unmatched_topics():
            if time.monotonic() > deadline:
                raise RuntimeError(f"DDS matched nothing on {self.unmatched_topics()} within "
                                   f"{spec.get('match_timeout', MATCH_TIMEOUT)} s")
            time.sleep(0.05)
        self._clear()
        period = 1.0 / spec["rate_hz"]
        camera_gap = spec.get("camera_gap", 0.002)
        prime_timeout = spec.get("prime_timeout", PRIME_TIMEOUT)
        deadline = time.monotonic() + prime_timeout
        primed = 0
        while not self._answered.is_set():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no ActionChunk answered any of {primed} priming sets within {prime_timeout} s")
            self.publish_set(camera_gap)
            primed += 1
            self._answered.wait(max(period, 0.1))
        time.sleep(spec.get("idle", IDLE_GAP))
        self._clear()
        cpu = CpuWindow().start()
        window_start = time.monotonic()
        start = time.perf_counter()
        published = late = 0
        publish_ms = []
        while published < spec.get("num_sets", 1 << 30) and published * period < spec.get("duration", float("inf")):
            delay = start + published * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -period:
                late += 1                         # the publisher itself fell a period behind
            publish_ms.append(1000.0 * self.publish_set(camera_gap))
            published += 1
        elapsed = time.perf_counter() - start
        # Answers to the last sets; once all are in, the graph process's sampler needs
        # `min_drain` s to record them inside the window.
        drain_start = time.monotonic()
        while (draining := time.monotonic() - drain_start) < spec.get("drain", 1.0):
            if draining >= spec.get("min_drain", 0.0) and self._all_answered(published):
                break
            time.sleep(0.01)
        window_end = time.monotonic()
        with self._lock:
            return {"sets_published": published, "primed_sets": primed, "elapsed_s": elapsed,
                    "publish_rate_hz": published / elapsed, "late_ticks": late, "publish_ms": summarize(publish_ms),
                    "cpu_percent": cpu.percent(), "latencies_ms": list(self._latencies),
                    "chunk_ages": [(t - start, age) for t, age in self._chunk_ages],
                    "window_start": window_start, "window_end": window_end, "peak_rss_mb": peak_rss_mb()}

    def destroy(self) -> None:
        self.executor.shutdown()
        self._spinner.join(timeout=5.0)
        self.node.destroy_node()


def phase_watchdog(spec: dict) -> float:
    """Seconds a phase of `spec` may take in the publisher (its own bounds plus 30 s of slack)."""
    run_s = spec["num_sets"] / spec["rate_hz"] if "num_sets" in spec else spec["duration"]
    return (spec.get("match_timeout", MATCH_TIMEOUT) + spec.get("prime_timeout", PRIME_TIMEOUT)
            + spec.get("idle", IDLE_GAP) + run_s + spec.get("drain", 1.0) + 30.0)


def main(argv: list[str] | None = None) -> int:
    """The publisher process: `{"ready": true}`, then one reply line per phase command read from
    stdin (`{"quit": true}` or end of input ends it). Under a faulthandler watchdog throughout:
    if a step outlives its bound, the stacks go to stderr and the process exits with status 1."""
    parser = argparse.ArgumentParser(description="vla3d bench publisher process (started by `vla3d bench`)")
    parser.add_argument("--messages", required=True, type=Path, help="camera set written by write_message_file")
    args = parser.parse_args(argv)
    faulthandler.dump_traceback_later(STARTUP_TIMEOUT, exit=True)
    # Replies get their own copy of stdout; anything else printing to fd 1 lands in stderr.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    context = rclpy.context.Context()
    rclpy.init(context=context)
    publisher = None
    try:
        publisher = ReplayPublisher(read_message_file(args.messages), context)
        replies.write(json.dumps({"ready": True}) + "\n")
        faulthandler.cancel_dump_traceback_later()
        for line in sys.stdin:
            command = json.loads(line)
            if command.get("quit"):
                break
            faulthandler.dump_traceback_later(phase_watchdog(command), exit=True)
            replies.write(json.dumps(publisher.run_phase(command)) + "\n")
            faulthandler.cancel_dump_traceback_later()
    finally:
        faulthandler.dump_traceback_later(TEARDOWN_TIMEOUT, exit=True)
        if publisher is not None:
            publisher.destroy()
        if context.ok():
            rclpy.shutdown(context=context)
        faulthandler.cancel_dump_traceback_later()
    return 0


# ---- the graph side -------------------------------------------------------------------------------


class PublisherProcess:
    """The publisher process, started at construction; `run(spec)` runs one phase in it.

    Every wait has a deadline past the publisher's own watchdog; on a deadline or an early exit the
    process is killed and RuntimeError quotes the end of its stderr. Use as a context manager:
    leaving the block asks it to quit and waits for it (killing it if an error is propagating).
    """

    def __init__(self, messages: Path, stderr_path: Path) -> None:
        self.stderr_path = Path(stderr_path)
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vla3d_ros.apps.bench_graph", "--messages", str(messages)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, bufsize=0, env=dict(os.environ))
        self._pending = b""
        self._ready = False

    def stderr_tail(self, chars: int = 3000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:]
        except OSError as error:
            return f"(stderr unreadable: {error})"

    def _fail(self, message: str) -> RuntimeError:
        """Kill the process; the error to raise, quoting the end of its stderr."""
        self.kill()
        return RuntimeError(f"bench publisher (pid {self.process.pid}): {message}; "
                            f"its stderr ends:\n{self.stderr_tail()}")

    def _reply(self, what: str, timeout: float) -> dict:
        """The next JSON line from the process within `timeout` s."""
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._fail(f"no reply for {what} within {timeout:.0f} s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                data = os.read(fd, 1 << 16)
                if not data:
                    try:
                        code = self.process.wait(timeout=WATCHDOG_MARGIN)
                    except subprocess.TimeoutExpired:
                        code = "still running"
                    raise self._fail(f"output closed (exit status {code}) during {what}")
                self._pending += data
        line, _, self._pending = self._pending.partition(b"\n")
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise self._fail(f"unreadable reply for {what}: {line[:200]!r}") from None

    def _send(self, command: dict) -> None:
        try:
            self.process.stdin.write((json.dumps(command) + "\n").encode())
        except BrokenPipeError:
            raise self._fail(f"exited (status {self.process.poll()}) before {command}") from None

    def wait_ready(self) -> None:
        """Until the process has its DDS participant and endpoints."""
        if not self._ready:
            reply = self._reply("startup", STARTUP_TIMEOUT + WATCHDOG_MARGIN)
            if reply != {"ready": True}:
                raise self._fail(f"unexpected startup reply {reply}")
            self._ready = True

    def run(self, spec: dict) -> dict:
        self.wait_ready()
        self._send(spec)
        return self._reply(f"phase {spec}", phase_watchdog(spec) + WATCHDOG_MARGIN)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=KILL_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"vla3d bench: the publisher process {self.process.pid} outlived SIGKILL by {KILL_TIMEOUT:.0f} s",
                  file=sys.stderr)

    def close(self) -> None:
        """Ask the process to quit and wait for it (its teardown is under its own watchdog). An
        unclean exit after the replies were received costs no result: reported on stderr."""
        try:
            self.process.stdin.write(b'{"quit": true}\n')
            self.process.stdin.close()
        except BrokenPipeError:
            pass
        try:
            code = self.process.wait(timeout=TEARDOWN_TIMEOUT + WATCHDOG_MARGIN)
        except subprocess.TimeoutExpired:
            self.kill()
            code = "killed"
        if code != 0:
            print(f"vla3d bench: the publisher process ended with status {code} after its last reply "
                  f"(results kept); its stderr ends:\n{self.stderr_tail()}", file=sys.stderr)

    def __enter__(self) -> "PublisherProcess":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.kill()


class _Sampler:
    """Samples the sync node's counters, queue depths and this process's CPU time every `period` s."""

    def __init__(self, sync, period: float) -> None:
        self.sync, self.period = sync, period
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        assembler = self.sync.assembler
        while not self._stop.wait(self.period):
            inputs = assembler.inputs
            times = os.times()
            self.samples.append({
                "t_mono": time.monotonic(),
                "cpu_s": times.user + times.system,
                "queue_depth_max": max(assembler.queue_depth(c, s) for c, s in inputs),
                "sync_dropped": sum(assembler.dropped(c, s) for c, s in inputs),
                "sets": self.sync.sets_received,
                "received": {f"{c}/{s}": monitor.total for (c, s), monitor in self.sync.monitors.items()},
            })

    def __enter__(self) -> "_Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        if self._thread.is_alive():
            print("vla3d bench: the queue sampler did not stop within 5 s", file=sys.stderr)

    def window(self, start: float, end: float) -> tuple[dict, list[dict]]:
        """(the last sample before `start`, the samples in [start, end] with t relative to start)."""
        before = [s for s in self.samples if s["t_mono"] < start]
        inside = [dict(s, t=s["t_mono"] - start) for s in self.samples if start <= s["t_mono"] <= end]
        if not before or not inside:
            raise RuntimeError(f"sampler saw {len(before)} samples before and {len(inside)} inside the window")
        return before[-1], inside


def _slope(xs, ys) -> float:
    """Least-squares slope dy/dx (0 with fewer than 3 points)."""
    if len(xs) < 3:
        return 0.0
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def _graph_run(context, publisher: PublisherProcess, preset_name: str, checkpoint: Path, trigger: str,
               inference_hz: float, spec: dict, sample_period: float, seed: int,
               precision: str) -> tuple[dict, dict]:
    """One graph in this process while the publisher runs `spec`; -> (publisher result, graph-side result)."""
    obs = bench_observation(preset_name, seed)
    config = bench_config(obs, inference_hz, precision=precision)
    graph = executor = spinner = None
    try:
        graph = build_graph(config, roles=("camera_sync", "inference"), context=context, trigger=trigger,
                            checkpoint=str(checkpoint), policy_loader=bench_policy_loader())
        sync, inference = graph["camera_sync"], graph["inference"]
        graph.transform_sink(sync).set_transform(BASE_FRAME, EE_FRAME, ee_transform(obs), None)
        graph.start()
        executor = graph.executor(multithreaded=True)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        with _Sampler(sync, sample_period) as sampler:
            published = publisher.run({**spec, "min_drain": 2.0 * sample_period})
        baseline, inside = sampler.window(published["window_start"], published["window_end"])
        final = inside[-1]
        graph_side = {
            "cpu_percent": 100.0 * (final["cpu_s"] - baseline["cpu_s"]) / (final["t_mono"] - baseline["t_mono"]),
            "received": {key: final["received"][key] - baseline["received"][key] for key in final["received"]},
            "sets_synchronised": final["sets"] - baseline["sets"],
            "sync_dropped": final["sync_dropped"] - baseline["sync_dropped"],
            "samples": [{k: v for k, v in sample.items() if k not in ("received", "t_mono", "cpu_s")}
                        for sample in inside],
            "inference_calls": inference.runner.calls if inference.runner else 0,
            "inference_failures": inference.runner.failures if inference.runner else 0,
            "overruns": inference.overruns.result().reason,
        }
        return published, graph_side
    finally:
        if executor is not None:
            executor.shutdown()
        if spinner is not None:
            spinner.join(timeout=10.0)
            if spinner.is_alive():
                print("vla3d bench: the graph executor still runs a callback 10 s after shutdown", file=sys.stderr)
        if graph is not None:
            destroy_graph(graph)


def dds_benchmarks(preset_name: str = "cpu", *, e2e_sets: int = 100, e2e_rate_hz: float = 2.0,
                   sustained_s: float = 60.0, camera_hz: float = 30.0, inference_hz: float = 5.0,
                   seed: int = 0, precision: str = "auto") -> dict:
    """{"e2e": ..., "sustained": ...} through real DDS (see the module docstring); the inference
    node's policy at `precision`."""
    obs = bench_observation(preset_name, seed)
    with tempfile.TemporaryDirectory(prefix="vla3d_bench_dds_") as tmp:
        tmp = Path(tmp)
        messages = write_message_file(obs, tmp / "camera_set.cdr")
        context = rclpy.context.Context()
        rclpy.init(context=context)
        host = None
        try:
            with PublisherProcess(messages, tmp / "publisher_stderr.txt") as publisher:
                checkpoint = save_bench_checkpoint(preset_name, tmp / "policy", seed)   # while it starts
                # This process's DDS participant is created with its first node and lives as long as
                # it: the host outlives the phase graphs and the publisher process (see the module
                # docstring). Created after the publisher's participant, its first announcements
                # find the publisher at once (measured: the first phase matched after 2-3 s when
                # the graph came first, at once now).
                publisher.wait_ready()
                host = rclpy.create_node("vla3d_bench_host", context=context)
                # e2e: one inference per set (trigger "observation"); sets far enough apart that each
                # is answered before the next, so the figure is the pipeline's latency, not queueing.
                # The node runs on a set when its stamp is a period past the last run: twice the set
                # rate lets every set through despite stamp jitter.
                e2e_published, e2e_graph = _graph_run(
                    context, publisher, preset_name, checkpoint, "observation", 2.0 * e2e_rate_hz,
                    {"rate_hz": e2e_rate_hz, "num_sets": e2e_sets, "drain": 2.0}, 0.25, seed, precision)
                # sustained: cameras at camera_hz, inference on its timer, as on a robot.
                published, graph_side = _graph_run(
                    context, publisher, preset_name, checkpoint, "timer", inference_hz,
                    {"rate_hz": camera_hz, "duration": sustained_s, "drain": 1.0}, 0.25, seed, precision)
        finally:
            if host is not None:
                host.destroy_node()
            rclpy.shutdown(context=context)
    latencies = e2e_published["latencies_ms"]
    if not latencies:
        raise RuntimeError(f"no ActionChunk came back for {e2e_published['sets_published']} sets: {e2e_graph}")
    e2e = {"sets": e2e_published["sets_published"], "answered": len(latencies), "rate_hz": e2e_rate_hz,
           "primed_sets": e2e_published["primed_sets"],
           "messages_received": e2e_graph["received"],
           "trigger": "observation", "latency_ms": summarize(latencies),
           "inference_failures": e2e_graph["inference_failures"]}
    e2e["p99_over_p50"] = e2e["latency_ms"]["p99"] / e2e["latency_ms"]["p50"]
    sets_published = published["sets_published"]
    synchronised = graph_side["sets_synchronised"]
    received = graph_side["received"]
    samples = graph_side["samples"]
    ages = published["chunk_ages"]
    sustained = {
        "duration_s": published["elapsed_s"], "camera_hz": camera_hz,
        "cameras": obs.num_views,
        "inference_hz": inference_hz, "sets_published": sets_published,
        "publish_rate_hz": published["publish_rate_hz"],
        "publisher_late_ticks": published["late_ticks"], "publisher_ms": published["publish_ms"],
        "sets_synchronised": synchronised,
        "set_drop_rate": max(0.0, 1.0 - synchronised / sets_published) if sets_published else 1.0,
        "messages_received": received,
        "message_loss_rate": (1.0 - sum(received.values()) / (sets_published * len(received))
                              if sets_published else 1.0),
        "sync_queue_depth_max": max((s["queue_depth_max"] for s in samples), default=0),
        "sync_queue_depth_slope_per_s": _slope([s["t"] for s in samples], [s["queue_depth_max"] for s in samples]),
        "sync_dropped_total": graph_side["sync_dropped"],
        "chunks_received": len(ages),
        "chunk_age_ms": summarize([1000.0 * a for _, a in ages]) if ages else None,
        "chunk_age_slope_ms_per_s": 1000.0 * _slope([t for t, _ in ages], [a for _, a in ages]),
        "inference_calls": graph_side["inference_calls"], "inference_failures": graph_side["inference_failures"],
        "overruns": graph_side["overruns"],
        "graph_cpu_percent": graph_side["cpu_percent"], "publisher_cpu_percent": published["cpu_percent"],
        "publisher_peak_rss_mb": published["peak_rss_mb"],
        "queue_samples": samples,
    }
    return {"e2e": e2e, "sustained": sustained}


if __name__ == "__main__":
    sys.exit(main())
