"""`vla3d demo` (what `./run demo` runs): the MuJoCo sim as a robot, the full ROS 2 graph, a checkpoint.

    vla3d demo [--checkpoint DIR] [--task T] [--episodes N] [--max-steps S] [--out DIR] [--seed S]

The sim bridge publishes the env's cameras, CameraInfo, depth, joint states and camera poses; the
graph `vla3d bringup` builds (camera sync -> lifecycle inference node -> action node with its safety
filter, armed, dry-run off: a simulator is safe; markers) answers in lockstep with sim time
(`vla3d_ros.ros.sim_bridge_node.run_sim_episodes`), so the outcome does not depend on how loaded
this machine is. The run uses a private DDS domain unless $ROS_DOMAIN_ID or --ros-domain-id
chooses one (see `demo_domain_id`). Writes into --out (default `demo_output/`, replaced on every run):

- `demo_overlay.png`: the policy's instance centroids, completed points and planned end-effector
  path drawn over the camera images it ran on, a row per time point, a column per camera
  (`vla3d_ros.evaluate.overlay`);
- `demo_run.mcap`: the run as ROS 2 messages, as a robot's bag holds them (cameras, CameraInfo,
  depth, joint states, gripper opening, the instruction, /tf and /tf_static, action chunks,
  instances, completed points, markers, timing, the servo and gripper commands), recorded with
  rosbags by `vla3d_ros.ros.recorder.BagRecorder`; log time = wall time of reception (as
  `ros2 bag record` logs), header stamps = sim time. Readable by rosbags, Foxglove and `ros2 bag`; `vla3d replay` and
  `vla3d convert --config config/robot_sim.yaml` take it like a robot's bag.

Prints each episode's success and steps, the policy latency (p50/p90 of the chunks' reported
latency), wall and CPU time. Exit 0 when the run completed, whether or not the task succeeded;
1 with a one-line reason when it could not run (no checkpoint, bad config, the policy never answered).

Torch runs one intra-op thread by default (`--threads`): the run is lockstep, so latency does not
change the outcome, and when other processes hold the cores more intra-op threads make an
inference slower, not faster (they spin waiting for each other).

The default checkpoint is the shipped one in `vla3d_ros/assets/checkpoints/default/`; there is no
fallback to an untrained policy. The task, cameras and image size default to what the checkpoint
was trained on (its `extra` metadata and policy config).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np


PACKAGE_DIR = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = PACKAGE_DIR / "assets" / "checkpoints" / "default"
DEFAULT_CONFIG = PACKAGE_DIR.parent / "config" / "robot_sim.yaml"
DEFAULT_TASK = "pick_place_bowl"
DEFAULT_CAMERAS = ("front", "side", "wrist")   # the order `vla3d gen` records by default
OVERLAY_NAME = "demo_overlay.png"
BAG_NAME = "demo_run.mcap"
TRAIN_HINT = ("train one with `vla3d gen --task pick_place_bowl --episodes 60 --out data/demos` then "
              "`vla3d train --data data/demos --out runs/demo` and pass `--checkpoint runs/demo/final`")


class DemoError(RuntimeError):
    """The demo cannot run; the message is the one line the user sees."""


# ---- set-up (ROS-free) ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoPlan:
    checkpoint: Path
    task: str
    cameras: tuple[str, ...]
    image_size: tuple[int, int]          # (H, W)
    episodes: int
    max_steps: int


def plan_demo(args: argparse.Namespace) -> DemoPlan:
    """Resolve the checkpoint, task, cameras and sizes; DemoError saying what to do otherwise."""
    from vla3d_ros.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, read_checkpoint_meta
    from vla3d_ros.model.config import ConfigError, PolicyConfig
    from vla3d_ros.sim.tasks import TASKS

    checkpoint = args.checkpoint or DEFAULT_CHECKPOINT
    if not (checkpoint / CONFIG_FILE).is_file() or not (checkpoint / WEIGHTS_FILE).is_file():
        what = "the shipped checkpoint" if args.checkpoint is None else "checkpoint"
        raise DemoError(f"{what} {checkpoint} is missing ({WEIGHTS_FILE} + {CONFIG_FILE} expected); {TRAIN_HINT}")
    try:
        meta = read_checkpoint_meta(checkpoint)
        policy_config = PolicyConfig.from_dict(meta["config"])
    except (CheckpointError, ConfigError, ValueError, TypeError) as error:
        raise DemoError(f"cannot read checkpoint {checkpoint}: {error}") from None
    extra = meta.get("extra") or {}
    trained_tasks = [task for task in extra.get("tasks", []) if task in TASKS]
    task = args.task or (trained_tasks[0] if trained_tasks else DEFAULT_TASK)
    if task not in TASKS:
        raise DemoError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    cameras = tuple(extra.get("camera_names") or DEFAULT_CAMERAS[:policy_config.num_views])
    if len(cameras) != policy_config.num_views:
        raise DemoError(f"checkpoint {checkpoint} records cameras {list(cameras)} but its policy takes "
                        f"{policy_config.num_views} views")
    if args.image_size is not None and args.image_size < 8:
        raise DemoError(f"--image-size must be >= 8 pixels, got {args.image_size}")
    image_size = (args.image_size, args.image_size) if args.image_size else tuple(policy_config.image_size)
    if args.episodes < 1:
        raise DemoError(f"--episodes must be >= 1, got {args.episodes}")
    max_steps = TASKS[task].max_steps if args.max_steps is None else args.max_steps
    if max_steps < 1:
        raise DemoError(f"--max-steps must be >= 1, got {max_steps}")
    if args.threads < 1:
        raise DemoError(f"--threads must be >= 1, got {args.threads}")
    if args.overlay_steps < 1:
        raise DemoError(f"--overlay-steps must be >= 1, got {args.overlay_steps}")
    return DemoPlan(checkpoint, task, cameras, image_size, args.episodes, max_steps)


def sim_runtime_config(path: Path, cameras: tuple[str, ...]):
    """The runtime config with exactly the checkpoint's cameras (in its order), dry-run off."""
    from vla3d_ros.runtime.config import ConfigError, load_runtime_config

    try:
        config = load_runtime_config(path)
    except ConfigError as error:
        raise DemoError(str(error)) from None
    missing = [name for name in cameras if name not in config.camera_names]
    if missing:
        raise DemoError(f"the checkpoint's cameras {missing} are not in {path} (it has {list(config.camera_names)})")
    # The simulator is the robot: commands must reach it (a real robot starts in dry-run).
    return dataclasses.replace(config, cameras=tuple(config.camera(name) for name in cameras),
                               safety=dataclasses.replace(config.safety, start_in_dry_run=False))


def demo_domain_id(requested: int | None) -> int | None:
    """The DDS domain to run in; None = rclpy's default ($ROS_DOMAIN_ID).

    Without an explicit choice the demo takes a private domain (101..200, apart from the test
    suite's 1..100): the lockstep player and the action node accept any chunk or service call
    on their topics, so another graph on the same domain (a second demo, a bringup, a test)
    would otherwise drive this robot and make the run meaningless.
    """
    if requested is not None:
        if not 0 <= requested <= 232:
            raise DemoError(f"--ros-domain-id must be in [0, 232], got {requested}")
        return requested
    if os.environ.get("ROS_DOMAIN_ID", "").strip():
        return None
    return 101 + os.getpid() % 100


def prepare_outputs(out: Path) -> tuple[Path, Path, Path]:
    """(overlay PNG, final MCAP file, scratch bag directory); this run's previous outputs removed."""
    out.mkdir(parents=True, exist_ok=True)
    overlay, bag_file, scratch = out / OVERLAY_NAME, out / BAG_NAME, out / ".demo_run_bag"
    for path in (overlay, bag_file):
        if path.is_dir():
            raise DemoError(f"{path} is a directory; not replacing it (choose another --out)")
        path.unlink(missing_ok=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return overlay, bag_file, scratch


def flatten_bag(scratch: Path, bag_file: Path) -> None:
    """Move the single MCAP file of a rosbag2 directory to `bag_file` (rosbags/Foxglove read it alone)."""
    files = sorted(scratch.glob("*.mcap"))
    if len(files) != 1:
        raise DemoError(f"expected one .mcap file in {scratch}, found {[f.name for f in files]}")
    files[0].replace(bag_file)
    shutil.rmtree(scratch)


# ---- collecting what the policy saw and said (ROS) -----------------------------------------------

@dataclass
class StepRecord:
    """One synchronised set and, if inference ran on it, the policy's outputs (all base frame)."""

    stamp: float
    episode_seed: int
    step: int
    instruction: str
    camera_names: tuple[str, ...]
    rgb: np.ndarray                      # (V, H, W, 3) uint8
    intrinsics: np.ndarray               # (V, 3, 3)
    T_base_cam: np.ndarray               # (V, 4, 4)
    ee_position: np.ndarray              # (3,)
    chunk_index: int | None = None       # order among the run's chunks
    chunk: object | None = None          # types.ActionChunk
    instances: object | None = None      # Instance3DArray message
    completed: object | None = None      # PointCloud2 message


def _stamp_key(stamp: float) -> int:
    return int(round(stamp * 1e9))


def make_collector(graph, env, *, max_kept: int = 48, recent: int = 4):
    """A node that pairs each inference's outputs with the synchronised observation it ran on.

    The observation comes from the graph's own camera sync node (images and calibration as they
    arrived over ROS) through a listener registered before the inference node's, so it sees the
    same set first; the env's episode seed and step are exact there, because the lockstep player
    does not advance the env while it waits for that set's chunk. Memory stays bounded: sets
    without a chunk are dropped once `recent` newer ones exist, and only every `stride`-th chunked
    record is kept, the stride doubling whenever more than `max_kept` are held (uniform spacing).
    """
    from rclpy.node import Node
    from sensor_msgs.msg import PointCloud2

    import vla3d_ros.msg
    from vla3d_ros.msg import Instance3DArray
    from vla3d_ros.ros import conversions
    from vla3d_ros.ros import topics
    from vla3d_ros.ros.qos import RELIABLE_QOS

    class DemoCollector(Node):
        def __init__(self) -> None:
            super().__init__("vla3d_demo_collector", context=graph.config_context)
            self.records: dict[int, StepRecord] = {}
            self.latencies: list[float] = []             # s, every chunk of the run
            self.chunks_seen = 0
            self.stride = 1
            self.errors: deque[str] = deque(maxlen=10)     # why recent sets gave no observation
            self.sync = graph["camera_sync"]
            self.sync.add_listener(self.on_set)
            self.create_subscription(vla3d_ros.msg.ActionChunk, topics.ACTION_CHUNK, self.on_chunk, RELIABLE_QOS)
            self.create_subscription(Instance3DArray, topics.INSTANCES, self.on_instances, RELIABLE_QOS)
            self.create_subscription(PointCloud2, topics.COMPLETED_POINTS, self.on_completed, RELIABLE_QOS)

        def on_set(self, stamp: float) -> None:
            try:
                obs = self.sync.observation(env.instruction)
            except (LookupError, ValueError) as error:   # no proprioception yet: the policy cannot run either
                self.errors.append(str(error))
                return
            self.records[_stamp_key(obs.stamp)] = StepRecord(
                obs.stamp, int(env.episode_seed), int(env.num_steps), obs.instruction, obs.camera_names,
                obs.rgb.copy(), obs.intrinsics.copy(), obs.T_base_cam.copy(), np.asarray(obs.ee_pose[:3], np.float64))
            self._prune()

        def on_chunk(self, msg) -> None:
            chunk = conversions.msg_to_action_chunk(msg)
            self.latencies.append(chunk.inference_latency)
            record = self.records.get(_stamp_key(chunk.stamp))
            if record is not None:
                record.chunk, record.chunk_index = chunk, self.chunks_seen
            self.chunks_seen += 1

        def on_instances(self, msg) -> None:
            record = self.records.get(_stamp_key(conversions.time_to_seconds(msg.header.stamp)))
            if record is not None:
                record.instances = msg

        def on_completed(self, msg) -> None:
            record = self.records.get(_stamp_key(conversions.time_to_seconds(msg.header.stamp)))
            if record is not None:
                record.completed = msg

        def _kept(self, record: StepRecord) -> bool:
            return record.chunk_index is not None and record.chunk_index % self.stride == 0

        def _prune(self) -> None:
            keys = sorted(self.records)
            newest = set(keys[-recent:])
            for key in keys:
                if key not in newest and not self._kept(self.records[key]):
                    del self.records[key]
            if sum(self._kept(r) for r in self.records.values()) > max_kept:
                self.stride *= 2
                self._prune()

        def frames(self) -> list[StepRecord]:
            """Records with a chunk, in time order."""
            return [self.records[key] for key in sorted(self.records) if self.records[key].chunk is not None]

        def overlay_frame(self, record: StepRecord):
            from vla3d_ros.evaluate.overlay import OverlayFrame

            instances = conversions.msg_to_instances(record.instances, record.completed) \
                if record.instances is not None else None
            if instances is not None:
                points, owners = instances.completed_points, instances.completed_instance
            elif record.completed is not None:
                points, owners = conversions.cloud_to_points(record.completed)
            else:
                points, owners = np.zeros((0, 3)), np.zeros(0, np.int64)
            try:
                path = record.chunk.planned_ee_positions(record.ee_position)
            except ValueError:            # not an end-effector delta action space: nothing to draw
                path = np.zeros((0, 3))
            found = 0 if instances is None else len(instances.ids)
            caption = (f"episode seed {record.episode_seed}, step {record.step}: {record.instruction!r} | "
                       f"{found} instances, {len(points)} completed points, {record.chunk.horizon}-step plan")
            return OverlayFrame(record.camera_names, record.rgb, record.intrinsics, record.T_base_cam,
                                instances=instances, completed_points=np.asarray(points, np.float64).reshape(-1, 3),
                                completed_instance=np.asarray(owners, np.int64), ee_path=path, caption=caption)

        def destroy_node(self) -> None:
            self.sync.remove_listener(self.on_set)
            super().destroy_node()

    return DemoCollector()


def recorded_topics(config) -> dict:
    """topic -> message class of everything the demo bag holds."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import TwistStamped
    from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2
    from std_msgs.msg import Float64, String
    from visualization_msgs.msg import MarkerArray

    import vla3d_ros.msg
    from vla3d_ros.msg import Instance3DArray
    from vla3d_ros.ros import topics

    recorded = {}
    for camera in config.cameras:
        recorded[camera.topics.color] = Image
        recorded[camera.topics.camera_info] = CameraInfo
        if camera.has_depth:
            recorded[camera.topics.depth] = Image
    recorded.update({
        config.joint_state_topic: JointState, topics.GRIPPER_OPENING: Float64, config.instruction_topic: String,
        topics.ACTION_CHUNK: vla3d_ros.msg.ActionChunk, topics.INSTANCES: Instance3DArray,
        topics.COMPLETED_POINTS: PointCloud2, topics.MARKERS: MarkerArray, topics.INFERENCE_TIMING: DiagnosticArray,
        config.output.servo.topic: TwistStamped,
    })
    if config.output.gripper_topic:
        recorded[config.output.gripper_topic] = Float64
    return recorded


def recording_transforms(graph, recorder, config):
    """node -> the graph's transform sink, teed into the demo bag's /tf and /tf_static as a robot's
    bag holds them: the cameras fixed in the scene on /tf_static, the hand camera and the end
    effector on /tf."""
    from vla3d_ros.ros.recorder import TransformTee
    from vla3d_ros.sim.scene import DEFAULT_CAMERAS

    fixed = [camera.frame_id for camera in config.cameras
             if camera.name in DEFAULT_CAMERAS and not DEFAULT_CAMERAS[camera.name].on_hand]
    return lambda node: TransformTee(graph.transform_sink(node), recorder, fixed)


# ---- the run -------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (DemoError, ValueError, FileExistsError) as error:
        print(f"vla3d demo: error: {error}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    wall_start, cpu_start = time.monotonic(), time.process_time()
    plan = plan_demo(args)
    config = sim_runtime_config(args.config, plan.cameras)
    domain_id = demo_domain_id(args.ros_domain_id)
    overlay_path, bag_file, scratch = prepare_outputs(args.out)

    import rclpy
    import torch

    from vla3d_ros.bench.stats import summarize
    from vla3d_ros.evaluate.overlay import evenly_spaced, save_overlay
    from vla3d_ros.ros import topics
    from vla3d_ros.ros.graph import build_graph, spin_until
    from vla3d_ros.ros.recorder import BagRecorder
    from vla3d_ros.ros.sim_bridge_node import run_sim_episodes
    from vla3d_ros.sim.env import TabletopEnv

    print(f"vla3d demo: task {plan.task}, {plan.episodes} episode(s) of <= {plan.max_steps} steps, cameras "
          f"{', '.join(plan.cameras)} at {plan.image_size[1]}x{plan.image_size[0]}, checkpoint {plan.checkpoint}, "
          f"ROS domain {os.environ.get('ROS_DOMAIN_ID', '0') if domain_id is None else domain_id}", flush=True)
    torch.set_num_threads(args.threads)
    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=domain_id)
    graph = env = recorder = None
    try:
        graph = build_graph(config, context=context, use_sim_time=True, trigger="observation",
                            checkpoint=str(plan.checkpoint))
        env = TabletopEnv(plan.task, image_size=plan.image_size, cameras=plan.cameras, seed=args.seed)
        collector = graph.add(make_collector(graph, env))
        recorder = graph.add(BagRecorder(scratch, recorded_topics(config), context=context, record_tf=True,
                                         name="vla3d_demo_recorder"))
        run_start, run_cpu = time.monotonic(), time.process_time()
        try:
            result = run_sim_episodes(graph, env, episodes=plan.episodes, max_steps=plan.max_steps, seed=args.seed,
                                      timeout=args.timeout, arm=True,
                                      transforms=recording_transforms(graph, recorder, config))
        except RuntimeError as error:      # the inference node could not configure/activate
            raise DemoError(str(error)) from None
        run_wall, run_cpu = time.monotonic() - run_start, time.process_time() - run_cpu
        # The last outputs may still be in flight: let the recorder and the collector take them (a
        # step the player did not time out on had at least one controller command).
        executor = graph.executor(multithreaded=False)

        def caught_up() -> bool:
            received = recorder.stats().received
            return received[topics.ACTION_CHUNK] >= result.chunks and collector.chunks_seen >= result.chunks \
                and received[config.output.servo.topic] >= result.steps - result.timeouts

        spin_until(executor, caught_up, timeout=5.0)
        executor.shutdown()
        stats = recorder.close()
        flatten_bag(scratch, bag_file)
        if result.chunks == 0:
            raise DemoError(f"the policy produced no action chunk in {result.steps} steps "
                            f"({result.timeouts} timeouts); see the log above")
        if not collector.frames():
            raise DemoError(f"none of the {result.chunks} action chunks could be paired with the camera set it was "
                            f"computed from ({'; '.join(collector.errors[-1:]) or 'no set seen'})")
        frames = evenly_spaced(collector.frames(), args.overlay_steps)
        save_overlay([collector.overlay_frame(record) for record in frames], overlay_path)
        latency = summarize(1000.0 * np.asarray(collector.latencies)) if collector.latencies else None
    finally:
        if graph is not None:
            graph.destroy()
        if env is not None:
            env.close()
        if context.ok():
            rclpy.shutdown(context=context)

    for number, outcome in enumerate(result.outcomes, start=1):
        print(f"episode {number} (seed {outcome.seed}): {'SUCCESS' if outcome.success else 'failure'} after "
              f"{outcome.steps} steps, {outcome.instruction!r}")
    successes = sum(outcome.success for outcome in result.outcomes)
    print(f"success: {successes}/{len(result.outcomes)} episodes ({plan.task})")
    if latency is not None:
        print(f"policy latency: p50 {latency['p50']:.0f} ms, p90 {latency['p90']:.0f} ms over {latency['n']} chunks")
    print(f"run: {result.steps} steps, {result.chunks} chunks, {result.timeouts} timeouts in {run_wall:.1f} s wall, "
          f"{run_cpu:.1f} s CPU; whole demo {time.monotonic() - wall_start:.1f} s wall, "
          f"{time.process_time() - cpu_start:.1f} s CPU")
    print(f"wrote {overlay_path} ({len(frames)} time points x {len(plan.cameras)} cameras)")
    print(f"wrote {bag_file} ({stats.total_written} messages on {sum(n > 0 for n in stats.written.values())} topics)")
    return 0
