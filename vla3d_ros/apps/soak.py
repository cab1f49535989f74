"""Soak test: the full graph under sustained camera load, with its resource use sampled every second.

`run_soak` builds the whole graph (camera_sync, inference, action, markers) from one config in one
process, a tiny or cpu-preset checkpoint saved with the model's API, the synthetic robot and a
`BagRecorder` of the graph's outputs; arms the action node; then for `minutes` samples once a
second: RSS, the depth of every queue (synchroniser per stream, chunk executor, recorder write-
behind queue), watchdog trips, holds, drops, inference overruns, threads. It writes `soak.csv`,
`soak.png` and `soak.json` and judges, after the warm-up:
- RSS growth <= 5 % (median of the last 10 % of samples vs the first 10 % after warm-up);
- no unbounded queue: the synchroniser's never exceed `sync.queue_size` per stream, and the
  executor's and the recorder's are no larger at the end than their maximum in the first window
  (bounded, not trending up);
- no watchdog miss: no stale-observation or command-timeout trip after the warm-up.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from sensor_msgs.msg import PointCloud2
from std_srvs.srv import SetBool
from visualization_msgs.msg import MarkerArray

import vla3d_ros.msg
from vla3d_ros.msg import Instance3DArray
from vla3d_ros.ros import topics
from vla3d_ros.ros.graph import build_graph, spin_until
from vla3d_ros.ros.qos import RELIABLE_QOS
from vla3d_ros.ros.recorder import BagRecorder
from vla3d_ros.ros.synthetic_robot import SyntheticRobot, synthetic_config

RSS_GROWTH_LIMIT = 0.05

OUTPUT_TOPICS = {topics.ACTION_CHUNK: vla3d_ros.msg.ActionChunk, topics.INSTANCES: Instance3DArray,
                 topics.COMPLETED_POINTS: PointCloud2, topics.MARKERS: MarkerArray,
                 topics.DIAGNOSTICS: DiagnosticArray}
COLUMNS = ("t_s", "rss_mb", "sync_queue_max", "sync_queue_total", "executor_chunks", "recorder_queue",
           "sets", "chunks", "commands", "holds", "drops", "observation_trips", "command_trips", "overruns",
           "threads")


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class SoakResult:
    samples: list[dict[str, float]]
    warmup_s: float
    rss_growth: float                  # fraction, after warm-up
    queue_bounds: dict[str, tuple[float, float]]   # queue -> (max in the first window, max at the end)
    watchdog_misses: int               # trips after warm-up
    passed: bool
    reasons: list[str] = field(default_factory=list)
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    settings: dict = field(default_factory=dict)

    def summary(self) -> str:
        last = self.samples[-1] if self.samples else {}
        lines = [f"soak {'PASSED' if self.passed else 'FAILED'}: {len(self.samples)} samples over "
                 f"{last.get('t_s', 0):.0f} s (warm-up {self.warmup_s:.0f} s), load average "
                 f"{self.load_average[0]:.2f} {self.load_average[1]:.2f} {self.load_average[2]:.2f}",
                 f"  RSS growth after warm-up {100 * self.rss_growth:+.2f} % (limit {100 * RSS_GROWTH_LIMIT:.0f} %), "
                 f"end {last.get('rss_mb', 0):.0f} MB",
                 "  queues (first window max -> end max): " + ", ".join(
                     f"{name} {a:.0f} -> {b:.0f}" for name, (a, b) in self.queue_bounds.items()),
                 f"  watchdog misses after warm-up: {self.watchdog_misses}; "
                 f"sets {last.get('sets', 0):.0f}, chunks {last.get('chunks', 0):.0f}, "
                 f"commands {last.get('commands', 0):.0f}, drops {last.get('drops', 0):.0f}, "
                 f"overruns {last.get('overruns', 0):.0f}"]
        lines += [f"  FAIL: {reason}" for reason in self.reasons]
        return "\n".join(lines)


def judge(samples: list[dict[str, float]], warmup_s: float, sync_queue_size: int) -> SoakResult:
    """The pass criteria of the module docstring over the samples."""
    after = [s for s in samples if s["t_s"] >= warmup_s]
    reasons = []
    if len(after) < 4:
        return SoakResult(samples, warmup_s, 0.0, {}, 0, False, [f"only {len(after)} samples after the warm-up"])
    window = max(2, len(after) // 10)
    first, last = after[:window], after[-window:]
    rss_start = float(np.median([s["rss_mb"] for s in first]))
    rss_growth = float(np.median([s["rss_mb"] for s in last])) / rss_start - 1.0
    if rss_growth > RSS_GROWTH_LIMIT:
        reasons.append(f"RSS grew {100 * rss_growth:.1f} % after the warm-up (limit {100 * RSS_GROWTH_LIMIT:.0f} %)")
    bounds = {}
    for name in ("sync_queue_max", "executor_chunks", "recorder_queue"):
        bounds[name] = (max(s[name] for s in first), max(s[name] for s in last))
    if max(s["sync_queue_max"] for s in samples) > sync_queue_size:
        reasons.append(f"a synchroniser queue exceeded its bound {sync_queue_size}")
    for name in ("executor_chunks", "recorder_queue"):
        start, end = bounds[name]
        if end > max(start, 1.0) * 2:
            reasons.append(f"{name} grows: max {start:.0f} in the first window, {end:.0f} at the end")
    base, end = after[0], samples[-1]
    misses = int(end["observation_trips"] - base["observation_trips"] + end["command_trips"] - base["command_trips"])
    if misses:
        reasons.append(f"{misses} watchdog trips after the warm-up "
                       f"({int(end['overruns'] - base['overruns'])} inference overruns in the same time)")
    return SoakResult(samples, warmup_s, rss_growth, bounds, misses, not reasons, reasons)


def plot(result: SoakResult, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([s["t_s"] for s in result.samples])
    column = lambda name: np.array([s[name] for s in result.samples])  # noqa: E731
    figure, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    rss = column("rss_mb")
    axes[0].plot(t, rss, color="C0")
    after = t >= result.warmup_s
    if after.any():
        base = float(np.median(rss[after][: max(2, after.sum() // 10)]))
        axes[0].axhspan(base, base * (1 + RSS_GROWTH_LIMIT), color="C2", alpha=0.15, label="+5 % after warm-up")
        axes[0].legend(loc="lower right")
    axes[0].set_ylabel("RSS (MB)")
    for name in ("sync_queue_max", "executor_chunks", "recorder_queue"):
        axes[1].plot(t, column(name), label=name)
    axes[1].set_ylabel("queue depth")
    axes[1].legend(loc="upper right")
    for name in ("drops", "observation_trips", "command_trips", "overruns"):
        axes[2].plot(t, column(name), label=name)
    axes[2].set_ylabel("cumulative count")
    axes[2].set_xlabel("time (s)")
    axes[2].legend(loc="upper left")
    for axis in axes:
        axis.axvline(result.warmup_s, color="grey", linestyle=":")
    settings = result.settings
    figure.suptitle(f"vla3d soak: {settings.get('cameras')} cameras x {settings.get('rate')} Hz, "
                    f"{settings.get('preset')} policy, {'PASSED' if result.passed else 'FAILED'}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_soak_checkpoint(directory: Path, preset: str, num_views: int, num_joints: int = 7) -> Path:
    """A `preset` policy with random weights (the soak measures the graph, not the policy's skill),
    with the shipped `cpu` preset's chunk horizon: the graph is soaked as deployed, where the chunk
    covers the inference period plus latency spikes (`runtime.chunk_executor.replanning_margin`)."""
    import torch

    from vla3d_ros.model.checkpoint import save_checkpoint
    import vla3d_ros.model.config
    from vla3d_ros.model.policy import VLA3DPolicy

    torch.manual_seed(0)
    config = dataclasses.replace(vla3d_ros.model.config.preset(preset), num_views=num_views, state_dim=num_joints + 8,
                                 horizon=vla3d_ros.model.config.preset("cpu").horizon)
    return save_checkpoint(directory, VLA3DPolicy(config), step_period=0.1)


class _Counter:
    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, _msg) -> None:
        with self._lock:
            self.count += 1


def run_soak(minutes: float, out_dir: str | Path, *, cameras: int = 3, rate: float = 30.0, preset: str = "tiny",
             image_size: int = 128, warmup_s: float | None = None, checkpoint: str | None = None,
             policy_loader=None, context=None, log: Callable[[str], None] | None = print) -> SoakResult:
    """Run the soak (see the module docstring); writes soak.csv, soak.png, soak.json, outputs.mcap/ in `out_dir`."""
    if minutes <= 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    if cameras < 1:
        raise ValueError(f"cameras must be >= 1, got {cameras}")
    out_dir = Path(out_dir)
    if (out_dir / "outputs.mcap").exists():
        raise FileExistsError(f"{out_dir} holds a previous soak (outputs.mcap); choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    duration = minutes * 60.0
    warmup_s = min(30.0, 0.2 * duration) if warmup_s is None else warmup_s
    names = ("front", "side", "wrist", *(f"cam{i}" for i in range(3, cameras)))[:cameras]
    config = synthetic_config(names, moving=names[-1:] if cameras > 1 else (),
                              rates={"inference_hz": 5.0, "control_hz": 30.0, "diagnostics_hz": 1.0})
    if checkpoint is None:
        checkpoint = str(save_soak_checkpoint(out_dir / f"{preset}_checkpoint", preset, cameras))
    own_context = context is None
    if own_context:
        context = rclpy.context.Context()
        rclpy.init(context=context)
    graph = None
    samples: list[dict[str, float]] = []
    try:
        graph = build_graph(config, context=context, checkpoint=checkpoint, policy_loader=policy_loader)
        recorder = graph.add(BagRecorder(out_dir / "outputs.mcap", {**OUTPUT_TOPICS, config.output.servo.topic:
                                                                    TwistStamped}, context=context,
                                         name="vla3d_soak_recorder"))
        robot = graph.add(SyntheticRobot(config, graph.transform_sink, rate=rate,
                                         image_size=image_size, context=context))
        probe = graph.add(rclpy.create_node("vla3d_soak_probe", context=context))
        chunks, commands = _Counter(), _Counter()
        probe.create_subscription(vla3d_ros.msg.ActionChunk, topics.ACTION_CHUNK, chunks, RELIABLE_QOS)
        probe.create_subscription(TwistStamped, config.output.servo.topic, commands, RELIABLE_QOS)
        arm = probe.create_client(SetBool, f"/{graph['action'].get_name()}/arm")
        graph.start()
        executor = graph.executor(multithreaded=True)
        if not arm.wait_for_service(timeout_sec=10.0):
            raise RuntimeError("the action node's ~/arm service never appeared")
        armed = arm.call_async(SetBool.Request(data=True))
        if not spin_until(executor, armed.done, timeout=10.0) or not armed.result().success:
            raise RuntimeError("could not arm the action node")
        robot.running = True
        sync, inference, action = graph["camera_sync"], graph["inference"], graph["action"]
        start = time.monotonic()
        next_sample = start
        while True:
            now = time.monotonic()
            if now >= next_sample:
                samples.append(_sample(now - start, sync, inference, action, recorder, robot, chunks, commands))
                if log is not None and len(samples) % 30 == 1:
                    s = samples[-1]
                    log(f"soak t={s['t_s']:.0f}s rss={s['rss_mb']:.0f}MB sets={s['sets']:.0f} chunks={s['chunks']:.0f} "
                        f"drops={s['drops']:.0f} trips={s['observation_trips'] + s['command_trips']:.0f}")
                next_sample += 1.0
                if now - start >= duration:
                    break
            executor.spin_once(timeout_sec=max(0.0, min(0.05, next_sample - time.monotonic())))
        robot.running = False
    finally:
        if graph is not None:
            graph.destroy()
        if own_context and context.ok():
            rclpy.shutdown(context=context)
    result = judge(samples, warmup_s, config.sync.queue_size)
    result.load_average = os.getloadavg()
    result.settings = {"minutes": minutes, "cameras": cameras, "rate": rate, "preset": preset,
                       "image_size": image_size, "cpus": os.cpu_count()}
    _write(result, out_dir)
    return result


def _sample(t, sync, inference, action, recorder, robot, chunks, commands) -> dict[str, float]:
    assembler = sync.assembler
    depths = [assembler.queue_depth(*key) for key in assembler.inputs]
    controller = action.controller
    return {
        "t_s": round(t, 3), "rss_mb": rss_bytes() / 2**20,
        "sync_queue_max": max(depths), "sync_queue_total": sum(depths),
        "executor_chunks": len(controller.executor), "recorder_queue": recorder.stats().queue_depth,
        "sets": sync.sets_received, "chunks": chunks.count, "commands": commands.count, "holds": controller.holds,
        "drops": sum(assembler.dropped(*key) for key in assembler.inputs),
        "observation_trips": controller.observation_watchdog.trips, "command_trips": controller.command_watchdog.trips,
        "overruns": inference.overruns.overruns, "threads": threading.active_count(),
    }


def _write(result: SoakResult, out_dir: Path) -> None:
    with open(out_dir / "soak.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(result.samples)
    plot(result, out_dir / "soak.png")
    summary = {"passed": result.passed, "reasons": result.reasons, "rss_growth": result.rss_growth,
               "queue_bounds": result.queue_bounds, "watchdog_misses": result.watchdog_misses,
               "warmup_s": result.warmup_s, "load_average": result.load_average, "settings": result.settings,
               "final": result.samples[-1] if result.samples else {}}
    (out_dir / "soak.json").write_text(json.dumps(summary, indent=2))
