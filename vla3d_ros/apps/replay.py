"""Bag replay through the live graph: `vla3d replay BAG --config robot.yaml`.

Any bag: one written by `vla3d convert` (read exactly, `data.bags.BagReader`) or a robot's own
recording (`ros2 bag record`, read through the runtime config by `data.bag_import.RobotBag`:
synchronised camera sets resampled at the step period, calibration from CameraInfo + TF). The
steps are played by a `LockstepPlayer` (owning /clock, use_sim_time everywhere) on the config's
topics through the same graph `vla3d bringup` builds; inference runs on every
`1 / rates.inference_hz` seconds of bag time. An `OutputRecorder` writes what the graph publishes
(ActionChunk, Instance3DArray, completed points, MarkerArray, the action node's commands,
diagnostics, inference timing) to a new MCAP bag. The report: per-camera rates, synchronised sets
and unmatched images of the bag, inference latency, the real-time factor (bag time / wall time)
and, when the bag holds the output adapter's commands (or is a `vla3d convert` bag with actions),
the open-loop error: each chunk's first row against the recorded action of its step, mean
absolute error (L1) per action dimension.

(rosbag2 is not installable here; on a full ROS install `launch/replay.launch.py` plays the bag
with `ros2 bag play --clock` into `vla3d bringup --use-sim-time` instead.)
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy

from vla3d_ros.ros.graph import NodeGraph, build_graph, spin_until
from vla3d_ros.ros.output_recorder import OutputRecorder, command_outputs
from vla3d_ros.ros.player import LockstepPlayer, StepCommand
from vla3d_ros.runtime.config import RuntimeConfig
from vla3d_ros.types import Observation


@dataclass
class ReplayEpisode:
    observations: list[Observation]
    recorded: np.ndarray | None          # (T, A) recorded actions / commands; None: the bag has none


@dataclass
class BagSummary:
    """What the bag itself holds, for the report."""

    duration: float                      # s of bag time played
    camera_rates: dict[str, float]       # Hz of each camera's colour stream
    sets: int                            # synchronised camera sets
    unmatched: dict[str, int]            # colour images in no set, per camera
    commands: str | None                 # the recorded command topic the open-loop error uses


class BagSource:
    """`StepSource` over a bag's episodes, open loop (the graph's commands are not fed back)."""

    def __init__(self, bag_path: str | Path, config: RuntimeConfig) -> None:
        from vla3d_ros.data.bag_import import has_vla3d_meta

        self.episodes = self._vla3d(bag_path) if has_vla3d_meta(bag_path) else self._robot(bag_path, config)
        self.episodes = [episode for episode in self.episodes if episode.observations]
        if not self.episodes:
            raise ValueError(f"{bag_path} has no steps")
        self._episode, self._next = -1, 0

    def _vla3d(self, bag_path) -> list[ReplayEpisode]:
        from vla3d_ros.data.bags import BagReader

        with BagReader(bag_path) as reader:
            steps = list(reader)
            stamps = [step.observation.stamp for step in steps]
            period = float(reader.meta.get("step_period", 0.0))
        duration = stamps[-1] - stamps[0] + period if stamps else 0.0
        rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
        names = steps[0].observation.camera_names if steps else ()
        self.summary = BagSummary(duration, dict.fromkeys(names, rate), len(steps), dict.fromkeys(names, 0),
                                  "/vla3d/action_chunk (recorded actions)")
        return [ReplayEpisode([step.observation for step in steps],
                              np.stack([step.action for step in steps]) if steps else None)]

    def _robot(self, bag_path, config: RuntimeConfig) -> list[ReplayEpisode]:
        from vla3d_ros.data.bag_import import RobotBag

        adapter_topic = config.output.servo.topic if config.output.adapter == "servo" else config.output.ros2_control.topic
        with RobotBag(bag_path, config) as probe:
            has_commands = adapter_topic in probe.connections
        convert = dataclasses.replace(config.convert, actions="command" if has_commands else "ee_pose")
        with RobotBag(bag_path, dataclasses.replace(config, convert=convert)) as robot:
            imported = robot.episodes()
            episodes = [ReplayEpisode([], None) for _ in imported]
            for number, observation, _ in robot.steps(imported):
                episodes[number].observations.append(observation)
            for episode, source in zip(episodes, imported):
                episode.recorded = source.actions.astype(np.float64) if has_commands else None
            stamps = [o.stamp for episode in episodes for o in episode.observations]
            self.summary = BagSummary(stamps[-1] - stamps[0] + robot.step_period if stamps else 0.0,
                                      robot.camera_rates, robot.sets, robot.unmatched,
                                      adapter_topic if has_commands else None)
        return episodes

    def stamps(self, episode: int) -> np.ndarray:
        return np.array([observation.stamp for observation in self.episodes[episode].observations])

    @property
    def num_steps(self) -> int:
        return sum(len(episode.observations) for episode in self.episodes)

    def reset(self) -> Observation | None:
        self._episode += 1
        if self._episode >= len(self.episodes):
            return None
        self._next = 1
        return self.episodes[self._episode].observations[0]

    def advance(self, command: StepCommand) -> Observation | None:
        observations = self.episodes[self._episode].observations
        if self._next >= len(observations):
            return None
        self._next += 1
        return observations[self._next - 1]


@dataclass
class ReplayReport:
    steps: int
    chunks: int
    counts: dict[str, int]
    action_l1: dict[str, float]               # per action dimension, mean |predicted - recorded|
    matched: int                              # chunks whose stamp matched a recorded step
    timeouts: int
    output: Path
    wall_seconds: float
    summary: BagSummary
    latency_ms: dict[str, float] = field(default_factory=dict)   # p50 / p90 of the chunks' inference latency

    @property
    def real_time_factor(self) -> float:
        """Bag seconds played per wall second (1 = as fast as the robot recorded it)."""
        return self.summary.duration / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def format(self) -> str:
        bag = self.summary
        rates = ", ".join(f"{camera} {rate:.1f} Hz" for camera, rate in bag.camera_rates.items())
        unmatched = ", ".join(f"{camera} {count}" for camera, count in bag.unmatched.items())
        latency = (f"inference latency p50 {self.latency_ms['p50']:.0f} ms, p90 {self.latency_ms['p90']:.0f} ms"
                   if self.latency_ms else "no inference")
        l1 = "  ".join(f"{name}={value:.4f}" for name, value in self.action_l1.items())
        why_not = "no chunk matched a step" if bag.commands else "the bag holds no commands of the output adapter"
        error = (f"open-loop L1 vs {bag.commands} per dimension ({self.matched} chunks): {l1}" if self.action_l1
                 else f"open-loop error: {why_not}")
        return (f"bag: {self.steps} steps, {bag.duration:.1f} s; cameras {rates}; {bag.sets} synchronised sets, "
                f"unmatched colour images: {unmatched}\n"
                f"replayed in {self.wall_seconds:.1f} s wall (real-time factor {self.real_time_factor:.2f}): "
                f"{self.chunks} chunks, {self.timeouts} timeouts; {latency}\n"
                f"recorded: {', '.join(f'{t}={n}' for t, n in self.counts.items() if n)} -> {self.output}\n"
                f"{error}")


def open_loop_l1(chunks, episodes: list[tuple[np.ndarray, np.ndarray, float]]) -> tuple[dict[str, float], int]:
    """Mean |first row - recorded action| per dimension over the chunks matched to a step by stamp.

    `episodes`: (stamps (T,), recorded actions (T, A), the player's stamp offset) per episode.
    """
    errors, names = [], ()
    for chunk in chunks:
        for stamps, recorded, offset in episodes:
            step = int(np.argmin(np.abs(stamps + offset - chunk.stamp)))
            if abs(stamps[step] + offset - chunk.stamp) > 1e-6 or chunk.actions.shape[1] != recorded.shape[1]:
                continue
            errors.append(np.abs(chunk.actions[0].astype(np.float64) - recorded[step]))
            names = chunk.dimension_names
            break
    if not errors:
        return {}, 0
    return dict(zip(names, np.mean(errors, axis=0).tolist())), len(errors)


def replay_bag(bag: str | Path, config: RuntimeConfig, output: str | Path, *, checkpoint: str | None = None,
               instruction: str | None = None, policy_loader=None, context=None,
               timeout: float = 60.0) -> ReplayReport:
    """Play `bag` through the graph in-process, record the outputs to `output`, report metrics.

    `instruction` replaces the instruction of every step (the bag's topic or the config's).
    """
    from vla3d_ros.bench.stats import summarize

    source = BagSource(bag, config)
    if instruction:
        for episode in source.episodes:
            episode.observations = [dataclasses.replace(o, instruction=instruction) for o in episode.observations]
    own_context = context is None
    if own_context:
        context = rclpy.context.Context()
        rclpy.init(context=context)
    graph: NodeGraph | None = None
    try:
        graph = build_graph(config, context=context, use_sim_time=True, trigger="observation",
                            checkpoint=checkpoint, policy_loader=policy_loader)
        recorder = graph.add(OutputRecorder(output, extra=command_outputs(config), context=context))
        player = graph.add(LockstepPlayer(graph.config, source, graph.transform_sink,
                                          inference_period=1.0 / graph.config.rates.inference_hz,
                                          consume_commands=False, timeout=timeout, context=context,
                                          name="vla3d_replay"))
        graph.start()
        executor = graph.executor(multithreaded=False)
        graph.wait_connected(executor, timeout=timeout)   # before the first step goes out
        start = time.monotonic()
        player.start()
        spin_until(executor, lambda: player.finished, timeout=timeout * (source.num_steps + 1))
        recorder.drain(graph, executor, timeout=timeout)   # the last outputs are still in flight
        wall = time.monotonic() - start
        recorded = [(source.stamps(e), episode.recorded, player.offsets[e])
                    for e, episode in enumerate(source.episodes) if episode.recorded is not None and e < len(player.offsets)]
        action_l1, matched = open_loop_l1(recorder.chunks, recorded)
        latencies = [1000.0 * chunk.inference_latency for chunk in recorder.chunks]
        return ReplayReport(steps=player.stats.steps, chunks=len(recorder.chunks), counts=dict(recorder.counts),
                            action_l1=action_l1, matched=matched,
                            timeouts=player.stats.chunk_timeouts + player.stats.command_timeouts,
                            output=Path(output), wall_seconds=wall, summary=source.summary,
                            latency_ms=summarize(np.asarray(latencies)) if latencies else {})
    finally:
        if graph is not None:
            graph.destroy()
        if own_context:
            rclpy.shutdown(context=context)
