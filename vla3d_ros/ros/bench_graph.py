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
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64

from vla3d_ros.bench.model_latency import HashInstructionEncoder, build_runner, deploy_observation, time_calls
from vla3d_ros.bench.stats import CpuWindow, peak_rss_mb, summarize
from vla3d_ros.geometry import matrix_to_quaternion_xyzw
from vla3d_ros.model.config import preset
from vla3d_ros.msg import ActionChunk as ActionChunkMsg
from vla3d_ros.ros import conversions as conv
from vla3d_ros.ros import topics
from vla3d_ros.ros.graph import build_graph
from vla3d_ros.ros.inference_node import load_checkpoint_policy
from vla3d_ros.ros.qos import RELIABLE_QOS, SENSOR_QOS
from vla3d_ros.runtime.calibration import CameraCalibration
from vla3d_ros.runtime.config import RuntimeConfig
from vla3d_ros.runtime.policy_runner import PolicyRunner as RuntimePolicyRunner
from vla3d_ros.types import EE_DELTA_ACTION_NAMES, Observation

CAMERAS = ("front", "side", "wrist")   # the first three; more views are named camera3, camera4, ...
BASE_FRAME, EE_FRAME = "world", "ee"
JOINT_TOPIC = "/bench/joint_states"
JOINT_NAMES = tuple(f"joint{i}" for i in range(1, 8))
INSTRUCTION = "put the red block on the green block"


# ---- the scene, the config and the messages (both processes build the same ones) -------------


@functools.lru_cache(maxsize=4)
def bench_observation(preset_name: str, seed: int = 0) -> Observation:
    """The 3-camera 640x480 RGB-D observation the publisher sends (deterministic in `seed`; cached,
    treat as read-only)."""
    return deploy_observation(preset(preset_name), seed=seed)


def camera_names(obs: Observation) -> tuple[str, ...]:
    """One camera per view of the policy (3 for the cpu and gpu presets)."""
    return tuple(CAMERAS[i] if i < len(CAMERAS) else f"camera{i}" for i in range(obs.num_views))


def camera_topics(name: str) -> dict[str, str]:
    return {"color": f"/bench/{name}/color", "camera_info": f"/bench/{name}/camera_info",
            "depth": f"/bench/{name}/depth"}


def bench_config(obs: Observation, inference_hz: float, queue_size: int = 5) -> RuntimeConfig:
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
        "device": "cpu",
    })


def camera_messages(obs: Observation) -> dict[str, tuple[Image, Image, CameraInfo]]:
    """(color rgb8, depth 16UC1 mm, CameraInfo) per camera; restamp with `stamp_messages`."""
    height, width = obs.rgb.shape[1:3]
    messages = {}
    for view, name in enumerate(camera_names(obs)):
        frame = f"{name}_optical"
        millimetres = np.nan_to_num(obs.depth[view] * 1000.0, nan=0.0).clip(0, 65535).round().astype(np.uint16)
        calibration = CameraCalibration(obs.intrinsics[view], width, height)
        messages[name] = (conv.array_to_image(obs.rgb[view], "rgb8", frame_id=frame),
                          conv.array_to_image(millimetres, "16UC1", frame_id=frame),
                          conv.calibration_to_camera_info(calibration, frame_id=frame))
    return messages


def proprio_messages(obs: Observation) -> tuple[JointState, Float64]:
    return conv.arrays_to_joint_state(JOINT_NAMES, obs.joint_positions), Float64(data=float(obs.gripper))


def stamp_messages(messages, stamp: float) -> None:
    time_msg = conv.seconds_to_time(stamp)
    for msg in messages:
        msg.header.stamp = time_msg


def ee_transform(obs: Observation) -> np.ndarray:
    return conv.pose_to_matrix(obs.ee_pose.astype(np.float64))


def save_bench_checkpoint(preset_name: str, directory: Path, seed: int = 0) -> Path:
    """A random-weight checkpoint of the preset (what the inference node loads at configure)."""
    import torch

    from vla3d_ros.model.checkpoint import save_checkpoint
    from vla3d_ros.model.policy import VLA3DPolicy

    torch.manual_seed(seed)
    return save_checkpoint(directory, VLA3DPolicy(preset(preset_name)), step_period=0.1)


def bench_policy_loader(instruction_dim: int = 384):
    """The real checkpoint loader with the stand-in sentence encoder (no multi-second model load)."""
    return functools.partial(load_checkpoint_policy, instruction_encoder=HashInstructionEncoder(instruction_dim))


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
    color, depth, _ = camera_messages(obs)[camera_names(obs)[0]]
    delivered_color = deserialize_message(serialize_message(color), Image)
    float_depth = conv.array_to_image(obs.depth[0].astype(np.float32), "32FC1")  # NaN = no return
    delivered_float = deserialize_message(serialize_message(float_depth), Image)
    rgb = conv.image_to_rgb(delivered_color)
    metres = conv.image_to_depth(delivered_float).metres
    build_ms = summarize(time_calls(lambda: conv.array_to_image(obs.rgb[0], "rgb8"), 20, 2))["p50"]
    decode_ms = summarize(time_calls(lambda: conv.image_to_rgb(delivered_color), 50, 2))["p50"]
    return {
        "rgb8_decode_is_view": bool(np.shares_memory(rgb, np.frombuffer(delivered_color.data, np.uint8))),
        "depth_32FC1_decode_is_view": bool(np.shares_memory(metres, np.frombuffer(delivered_float.data, np.uint8))),
        "depth_16UC1_decode_is_view": False,  # millimetres -> metres is a conversion: one float32 copy
        "rgb8_decode_ms_p50": decode_ms,
        "rgb8_message_build_ms_p50": build_ms,
    }


def node_overhead(preset_name: str = "cpu", runs: int = 100, warmup: int = 10, seed: int = 0) -> dict:
    """Per-stage and total ms of messages -> observation -> tensors -> ActionChunk message, no model."""
    obs = bench_observation(preset_name, seed)
    config = bench_config(obs, inference_hz=30.0)
    messages = camera_messages(obs)
    joint_msg, gripper_msg = proprio_messages(obs)
    model_runner = build_runner(preset(preset_name), seed)
    model_output = model_runner.infer(obs)
    runner = RuntimePolicyRunner(StoredOutputPolicy(model_runner, model_output), EE_DELTA_ACTION_NAMES, 0.1)
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
            conv.action_chunk_to_msg(result.chunk, BASE_FRAME)
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
            graph.destroy()
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


def _wait_for_matches(node, publishers, subscriptions, executor, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(p.get_subscription_count() > 0 for p in publishers) and \
                all(s.get_publisher_count() > 0 for s in subscriptions):
            return True
        executor.spin_once(timeout_sec=0.05)
    return False


def publish(spec: dict) -> dict:
    """The publisher process: camera sets at `rate_hz`, ActionChunks received back (one clock).

    Priming first: sets are published until the first ActionChunk comes back (DDS data channels
    are set up lazily after discovery and the first best-effort images are lost), then one idle
    second, then the measured window [window_start, window_end] (time.monotonic, which is
    system-wide on Linux, so the graph process can cut its counters to the same window).
    """
    obs = bench_observation(spec["preset"], spec["seed"])
    messages = camera_messages(obs)
    joint_msg, gripper_msg = proprio_messages(obs)
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("vla3d_bench_publisher", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    sent: dict[int, float] = {}            # stamp ns -> perf_counter after the set's last publish
    latencies: list[float] = []
    chunk_ages: list[tuple[float, float]] = []   # (perf_counter at receipt, receive wall - stamp)
    lock = threading.Lock()

    def on_chunk(msg: ActionChunkMsg) -> None:
        now, wall = time.perf_counter(), time.time()
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with lock:
            sent_at = sent.get(stamp_ns)
            if sent_at is not None:
                latencies.append(1000.0 * (now - sent_at))
            chunk_ages.append((now, wall - conv.time_to_seconds(msg.header.stamp)))

    spinner = None
    try:
        publishers = []
        names = camera_names(obs)
        for name in names:
            names_of = camera_topics(name)
            publishers += [node.create_publisher(Image, names_of["color"], SENSOR_QOS),
                           node.create_publisher(Image, names_of["depth"], SENSOR_QOS),
                           node.create_publisher(CameraInfo, names_of["camera_info"], SENSOR_QOS)]
        camera_msgs = [msg for name in names for msg in messages[name]]
        joint_pub = node.create_publisher(JointState, JOINT_TOPIC, SENSOR_QOS)
        gripper_pub = node.create_publisher(Float64, topics.GRIPPER_OPENING, SENSOR_QOS)
        chunk_sub = node.create_subscription(ActionChunkMsg, topics.ACTION_CHUNK, on_chunk, RELIABLE_QOS)
        if not _wait_for_matches(node, publishers + [joint_pub, gripper_pub], [chunk_sub], executor, 20.0):
            raise RuntimeError("the graph did not discover the bench publisher within 20 s")
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        period = 1.0 / spec["rate_hz"]
        camera_gap = spec.get("camera_gap", 0.002)

        def publish_set() -> float:
            """Publish one set stamped now; returns the publish duration (s)."""
            stamp = time.time()
            stamp_time = conv.seconds_to_time(stamp)
            stamp_messages(camera_msgs + [joint_msg], stamp)
            begin = time.perf_counter()
            joint_pub.publish(joint_msg)
            gripper_pub.publish(gripper_msg)
            for index, (publisher, msg) in enumerate(zip(publishers, camera_msgs)):
                if index and index % 3 == 0:
                    time.sleep(camera_gap)    # cameras are separate devices, not one 5 MB burst
                publisher.publish(msg)
            done = time.perf_counter()
            with lock:
                sent[stamp_time.sec * 1_000_000_000 + stamp_time.nanosec] = done
            return done - begin

        deadline = time.monotonic() + spec.get("prime_timeout", 60.0)
        primed = 0
        while not chunk_ages:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no ActionChunk came back after {primed} priming sets")
            publish_set()
            primed += 1
            time.sleep(max(period, 0.1))
        time.sleep(1.0)                           # idle gap: the graph settles, counters are sampled
        with lock:
            sent.clear()
            latencies.clear()
            chunk_ages.clear()
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
            publish_ms.append(1000.0 * publish_set())
            published += 1
        elapsed = time.perf_counter() - start
        time.sleep(spec.get("drain", 1.0))        # answers to the last sets
        window_end = time.monotonic()
        with lock:
            return {"sets_published": published, "primed_sets": primed, "elapsed_s": elapsed,
                    "publish_rate_hz": published / elapsed, "late_ticks": late, "publish_ms": summarize(publish_ms),
                    "cpu_percent": cpu.percent(), "latencies_ms": list(latencies),
                    "chunk_ages": [(t - start, age) for t, age in chunk_ages],
                    "window_start": window_start, "window_end": window_end, "peak_rss_mb": peak_rss_mb()}
    finally:
        executor.shutdown()
        if spinner is not None:
            spinner.join(timeout=5.0)
        node.destroy_node()
        if context.ok():
            rclpy.shutdown(context=context)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="vla3d bench publisher process (started by `vla3d bench`)")
    parser.add_argument("--spec", required=True, help="JSON spec")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    result = publish(json.loads(args.spec))
    args.out.write_text(json.dumps(result))
    return 0


# ---- the graph side -------------------------------------------------------------------------------


def _run_publisher(spec: dict, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="vla3d_bench_") as tmp:
        out = Path(tmp) / "publisher.json"
        command = [sys.executable, "-m", "vla3d_ros.ros.bench_graph", "--spec", json.dumps(spec), "--out", str(out)]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
        if completed.returncode != 0 or not out.exists():
            raise RuntimeError(f"bench publisher failed ({completed.returncode}): {completed.stderr[-2000:]}")
        return json.loads(out.read_text())


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


def _graph_run(preset_name: str, checkpoint: Path, trigger: str, inference_hz: float, spec: dict,
               sample_period: float, seed: int) -> tuple[dict, dict]:
    """One graph in this process + the publisher process; -> (publisher result, graph-side result)."""
    obs = bench_observation(preset_name, seed)
    config = bench_config(obs, inference_hz)
    context = rclpy.context.Context()
    rclpy.init(context=context)
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
            publisher = _run_publisher(spec, timeout=spec.get("duration", 0) + spec.get("num_sets", 0) + 180)
        baseline, inside = sampler.window(publisher["window_start"], publisher["window_end"])
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
        return publisher, graph_side
    finally:
        if executor is not None:
            executor.shutdown()
        if spinner is not None:
            spinner.join(timeout=10.0)
        if graph is not None:
            graph.destroy()
        rclpy.shutdown(context=context)


def dds_benchmarks(preset_name: str = "cpu", *, e2e_sets: int = 100, e2e_rate_hz: float = 2.0,
                   sustained_s: float = 60.0, camera_hz: float = 30.0, inference_hz: float = 5.0,
                   seed: int = 0) -> dict:
    """{"e2e": ..., "sustained": ...} through real DDS (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="vla3d_bench_ckpt_") as tmp:
        checkpoint = save_bench_checkpoint(preset_name, Path(tmp) / "policy", seed)
        base_spec = {"preset": preset_name, "seed": seed}
        # e2e: one inference per set (trigger "observation"); sets far enough apart that each is
        # answered before the next, so the figure is the pipeline's latency, not queueing.
        # The node runs on a set when its stamp is a period past the last run: twice the set rate
        # lets every set through despite stamp jitter.
        publisher, graph_side = _graph_run(
            preset_name, checkpoint, "observation", 2.0 * e2e_rate_hz,
            {**base_spec, "rate_hz": e2e_rate_hz, "num_sets": e2e_sets, "drain": 2.0}, 0.25, seed)
        latencies = publisher["latencies_ms"]
        if not latencies:
            raise RuntimeError(f"no ActionChunk came back for {publisher['sets_published']} sets: {graph_side}")
        e2e = {"sets": publisher["sets_published"], "answered": len(latencies), "rate_hz": e2e_rate_hz,
               "primed_sets": publisher["primed_sets"],
               "messages_received": graph_side["received"],
               "trigger": "observation", "latency_ms": summarize(latencies),
               "inference_failures": graph_side["inference_failures"]}
        e2e["p99_over_p50"] = e2e["latency_ms"]["p99"] / e2e["latency_ms"]["p50"]
        # sustained: cameras at camera_hz, inference on its timer, as on a robot.
        publisher, graph_side = _graph_run(
            preset_name, checkpoint, "timer", inference_hz,
            {**base_spec, "rate_hz": camera_hz, "duration": sustained_s, "drain": 1.0}, 0.25, seed)
    published = publisher["sets_published"]
    synchronised = graph_side["sets_synchronised"]
    received = graph_side["received"]
    samples = graph_side["samples"]
    ages = publisher["chunk_ages"]
    sustained = {
        "duration_s": publisher["elapsed_s"], "camera_hz": camera_hz,
        "cameras": bench_observation(preset_name, seed).num_views,
        "inference_hz": inference_hz, "sets_published": published, "publish_rate_hz": publisher["publish_rate_hz"],
        "publisher_late_ticks": publisher["late_ticks"], "publisher_ms": publisher["publish_ms"],
        "sets_synchronised": synchronised,
        "set_drop_rate": max(0.0, 1.0 - synchronised / published) if published else 1.0,
        "messages_received": received,
        "message_loss_rate": 1.0 - sum(received.values()) / (published * len(received)) if published else 1.0,
        "sync_queue_depth_max": max((s["queue_depth_max"] for s in samples), default=0),
        "sync_queue_depth_slope_per_s": _slope([s["t"] for s in samples], [s["queue_depth_max"] for s in samples]),
        "sync_dropped_total": graph_side["sync_dropped"],
        "chunks_received": len(ages),
        "chunk_age_ms": summarize([1000.0 * a for _, a in ages]) if ages else None,
        "chunk_age_slope_ms_per_s": 1000.0 * _slope([t for t, _ in ages], [a for _, a in ages]),
        "inference_calls": graph_side["inference_calls"], "inference_failures": graph_side["inference_failures"],
        "overruns": graph_side["overruns"],
        "graph_cpu_percent": graph_side["cpu_percent"], "publisher_cpu_percent": publisher["cpu_percent"],
        "publisher_peak_rss_mb": publisher["peak_rss_mb"],
        "queue_samples": samples,
    }
    return {"e2e": e2e, "sustained": sustained}


if __name__ == "__main__":
    sys.exit(main())
