"""The fault-injection rig shared by test_fault_*.py: the real node graph over loopback DDS, the soak's
`SyntheticRobot` publishing RGB-D camera sets, a probe, a running bag recorder and a publish ledger.

    rig = FaultRig(ros_context, tmp_path, checkpoint, monkeypatch)  # camera_sync, inference, action
    rig.start_running()                                 # armed, chunks flowing, arm moving
    rig.inject(fault)                                   # fault(robot, stamp) replaces healthy ticks
    rig.wait_for(lambda: rig.diagnostic("...") and rig.held())
    rig.inject(None); rig.wait_recovered()              # the node kept running
    conclude(rig, case, ...)                            # nothing lost from the bag; report the case

"Nothing lost" is checked exactly: every message any in-process publisher sends on a recorded
topic after the recorder has matched every publisher is keyed by its content (`message_key`)
in the `PublishLedger`; the bag is read back from disk and must contain each of those messages.
(Not by hashing the CDR bytes: serialisation leaves alignment padding uninitialised.)
No sleeps synchronise anything: every wait spins the executor until a condition holds.
"""
from __future__ import annotations

import array
import collections
import dataclasses
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from rcl_interfaces.msg import Log
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2
from std_msgs.msg import Float64, String
from std_srvs.srv import SetBool

from ros_graph_fixtures import ConstantInstructionEncoder, save_tiny_checkpoint
from vla3d_ros.msg import ActionChunk as ActionChunkMsg
from vla3d_ros.msg import Instance3DArray
from vla3d_ros.ros import conversions as conv
from vla3d_ros.ros import topics
from vla3d_ros.ros.graph import build_graph, spin_until
from vla3d_ros.ros.inference_node import load_checkpoint_policy
from vla3d_ros.ros.qos import RELIABLE_QOS
from vla3d_ros.ros.recorder import BagRecorder
from vla3d_ros.ros.synthetic_robot import SyntheticRobot, synthetic_config
from vla3d_ros.runtime.config import RuntimeConfig
from vla3d_ros.runtime.diagnostics import Level

SIZE = 32                      # the tiny preset's image size
SERVO_TOPIC = "/f/servo"
GRIPPER_COMMAND_TOPIC = "/f/gripper"
CAMERA_RATE = 15.0             # Hz of the synthetic robot's camera sets
CAMERAS = ("front", "wrist")
REPORT_ENV = "VLA3D_FAULT_REPORT"   # path of a JSON lines file the cases append their observations to


def fault_config(**overrides) -> RuntimeConfig:
    """The rig's runtime config: front (32FC1, fixed extrinsics) and wrist (16UC1, TF) on /f/..., fast
    rates and short timeouts so faults show within a fraction of a second; `overrides` as in
    `synthetic_config`."""
    sections = {
        "rates": {"inference_hz": 10.0, "control_hz": 20.0, "diagnostics_hz": 10.0},
        "watchdog": {"observation_timeout": 0.5, "command_timeout": 0.15, "camera_timeout": 0.5,
                     "camera_startup_grace": 0.5},
        "executor": {"max_chunk_age": 1.0}, "sync": {"slop": 0.005, "queue_size": 5},
        "output": {"servo": {"topic": SERVO_TOPIC, "frame_id": "world"}, "gripper_topic": GRIPPER_COMMAND_TOPIC},
    }
    for key, value in overrides.items():
        sections[key] = {**sections[key], **value} if isinstance(value, dict) and key in sections else value
    return synthetic_config(CAMERAS, moving=("wrist",), prefix="/f", **sections)


_CHECKPOINT: dict[str, Path] = {}


@pytest.fixture
def checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint (random weights) saved with the model's API, once per test session."""
    if "tiny" not in _CHECKPOINT:
        _CHECKPOINT["tiny"] = save_tiny_checkpoint(tmp_path_factory.mktemp("fault_ckpt") / "tiny")
    return _CHECKPOINT["tiny"]


# ---- the publish ledger --------------------------------------------------------------------------

def _canonical(value):
    if hasattr(value, "get_fields_and_field_types"):
        return tuple(_canonical(getattr(value, name)) for name in value.get_fields_and_field_types())
    if isinstance(value, (array.array, np.ndarray)):
        return np.asarray(value).tobytes()
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(item) for item in value)
    if isinstance(value, float):
        return value.hex()   # NaN == NaN, bit for bit
    return value


def message_key(msg) -> int:
    """A hash of a message's content (every field, recursively)."""
    return hash(_canonical(msg))


class PublishLedger:
    """Hashes of every message published in this process on `topics` while armed (thread-safe).

    Installed by patching `rclpy.publisher.Publisher.publish` (lifecycle publishers call it too).
    Whether a message counts is decided once, under the lock, by the `armed` state at the moment
    it is counted; `disarm` takes the lock, so once it returns the ledger is final: a publish
    still running on an executor thread can neither slip in after the snapshot nor be half counted.
    """

    def __init__(self, topics_: set[str]) -> None:
        self.topics = set(topics_)
        self.armed = False
        self.published: dict[str, collections.Counter] = {topic: collections.Counter() for topic in topics_}
        self._lock = threading.Lock()

    def install(self, monkeypatch) -> None:
        original = Publisher.publish
        ledger = self

        def publish(publisher, msg):
            original(publisher, msg)
            if ledger.armed and publisher.topic_name in ledger.topics:
                if isinstance(msg, bytes):
                    msg = deserialize_message(msg, publisher.msg_type)
                key = message_key(msg)
                with ledger._lock:
                    if ledger.armed:
                        ledger.published[publisher.topic_name][key] += 1
        monkeypatch.setattr(Publisher, "publish", publish)

    def disarm(self) -> dict[str, collections.Counter]:
        """Stop counting; returns a copy of the final ledger."""
        with self._lock:
            self.armed = False
            return {topic: collections.Counter(counter) for topic, counter in self.published.items()}


@dataclasses.dataclass
class RecordingCheck:
    published: dict[str, int]       # per topic, after the recorder matched every publisher
    recorded: dict[str, int]        # of those, found in the bag on disk
    bag_total: int                  # messages in the bag (includes the ones before arming)

    @property
    def lost(self) -> dict[str, int]:
        return {t: self.published[t] - self.recorded[t] for t in self.published if self.published[t] != self.recorded[t]}


# ---- faulty policies (the inference node's public seam: build_graph(policy_loader=...)) ----------

class FaultyPolicy:
    """Wraps the real policy; `mode` selects the injected fault (None = pass through).

    raise: infer raises. slow: infer takes `delay` s. nonfinite: one action value NaN, one +inf.
    far: the first row moves 10 m along x.
    """

    def __init__(self, policy) -> None:
        self.policy = policy
        self.mode: str | None = None
        self.delay = 0.8

    def infer(self, obs):
        if self.mode == "raise":
            raise RuntimeError("injected fault: CUDA error: an illegal memory access was encountered")
        if self.mode == "slow":
            time.sleep(self.delay)   # the fault itself (a slow model), not synchronisation
        output = self.policy.infer(obs)
        if self.mode in ("nonfinite", "far"):
            actions = np.array(output["actions"], np.float32)
            if self.mode == "far":
                actions[:, 0] = 10.0
            else:
                actions[1, 2], actions[2, 0] = np.nan, np.inf
            output = dict(output, actions=actions)
        return output


# ---- the rig -------------------------------------------------------------------------------------

_CONSOLE_LINE = re.compile(r"^\[(?:DEBUG|INFO|WARN|ERROR|FATAL)\] \[[0-9.]+\] \[(?P<name>[^\]]+)\]: (?P<msg>.*)$")


@dataclasses.dataclass
class LogLine:
    """A console log line, shaped like rcl_interfaces/Log for `FaultRig.log`."""

    name: str
    msg: str


RECORDED_TOPICS = {
    **{f"/f/{name}/{stream}": (CameraInfo if stream == "camera_info" else Image)
       for name in CAMERAS for stream in ("color", "camera_info", "depth")},
    "/f/joint_states": JointState, topics.GRIPPER_OPENING: Float64, "/f/instruction": String,
    topics.ACTION_CHUNK: ActionChunkMsg, topics.INSTANCES: Instance3DArray,
    topics.COMPLETED_POINTS: PointCloud2, SERVO_TOPIC: TwistStamped, GRIPPER_COMMAND_TOPIC: Float64,
    topics.DIAGNOSTICS: DiagnosticArray, topics.CLOCK: ClockMsg,
}


def is_zero(twist: TwistStamped) -> bool:
    t = twist.twist
    return not any((t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z))


class FaultRig:
    """See the module docstring. `start_graph=False` leaves the inference node unconfigured
    (checkpoint cases configure it themselves); `checkpoint=None` runs the config's policy server."""

    def __init__(self, context, tmp_path: Path, checkpoint: str | Path | None, monkeypatch, *, console=None,
                 config: RuntimeConfig | None = None, use_sim_time: bool = False, start_graph: bool = True) -> None:
        self.context = context
        # The log is read from /rosout and, as rcl's /rosout publishers are registered per logger
        # name process-wide (a node of the same name in an earlier test can take the line with it),
        # also from the console output (pytest's capfd): both are the node's log.
        self.console = console
        self.console_lines: list[LogLine] = []
        self.console_out = ""
        self.config = config or fault_config()
        self.ledger = PublishLedger(set(RECORDED_TOPICS))
        self.ledger.install(monkeypatch)
        self.policy: FaultyPolicy | None = None
        self.graph = build_graph(self.config, roles=("camera_sync", "inference", "action"), context=context,
                                 use_sim_time=use_sim_time, checkpoint=str(checkpoint) if checkpoint else None,
                                 policy_loader=self._load)
        try:
            self.recorder = self._own(BagRecorder(tmp_path / "bag", RECORDED_TOPICS, context=context,
                                                  name="fault_recorder"))
            self.robot = self._own(SyntheticRobot(self.config, self.graph.transform_sink, rate=CAMERA_RATE,
                                                  image_size=SIZE, sim_time=use_sim_time, context=context,
                                                  name="fault_robot"))
            self.probe = self._own(rclpy.create_node("fault_probe", context=context))
            self.diagnostics: list = []        # (DiagnosticStatus) in arrival order
            self.twists: list[TwistStamped] = []
            self.chunks: list[ActionChunkMsg] = []
            self.logs: list[Log] = []
            self.probe.create_subscription(DiagnosticArray, topics.DIAGNOSTICS,
                                           lambda m: self.diagnostics.extend(m.status), RELIABLE_QOS)
            self.probe.create_subscription(TwistStamped, SERVO_TOPIC, self.twists.append, RELIABLE_QOS)
            self.probe.create_subscription(ActionChunkMsg, topics.ACTION_CHUNK, self.chunks.append, RELIABLE_QOS)
            self.probe.create_subscription(Log, "/rosout", self.logs.append, RELIABLE_QOS)
            self.instruction = self.probe.create_publisher(String, "/f/instruction", RELIABLE_QOS)
            self.arm_client = self.probe.create_client(SetBool, "/vla3d_action/arm")
            if start_graph:
                self.graph.start()
            self.executor = self.graph.executor(multithreaded=True)
        except BaseException:
            self.destroy()
            raise
        self.marks = {"diagnostics": 0, "twists": 0, "chunks": 0, "logs": 0, "console": 0}
        self.fault_stamp = 0.0

    def _own(self, node: Node) -> Node:
        return self.graph.add(node)

    def _load(self, checkpoint: str, device: str, precision: str):
        loaded = load_checkpoint_policy(checkpoint, device, precision, instruction_encoder=ConstantInstructionEncoder())
        self.policy = FaultyPolicy(loaded.policy)
        return dataclasses.replace(loaded, policy=self.policy)

    # ---- waiting --------------------------------------------------------------------------------

    def wait_for(self, condition: Callable[[], object], timeout: float = 8.0) -> bool:
        return spin_until(self.executor, lambda: bool(condition()), timeout)

    def arm(self) -> None:
        assert self.arm_client.wait_for_service(timeout_sec=5.0)
        future = self.arm_client.call_async(SetBool.Request(data=True))
        assert self.wait_for(future.done), "no answer from ~/arm"
        assert future.result().success, future.result().message

    def _publishers_matched(self) -> bool:
        """Every in-process publisher of a recorded topic has matched every in-process subscription."""
        nodes = self.graph.all_nodes()
        subscriptions = collections.Counter(s.topic_name for node in nodes for s in node.subscriptions)
        return all(publisher.get_subscription_count() >= subscriptions[publisher.topic_name]
                   for node in nodes for publisher in node.publishers if publisher.topic_name in RECORDED_TOPICS)

    def start_recording(self) -> None:
        """Arm the ledger once discovery is complete; the robot starts publishing."""
        assert self.wait_for(self._publishers_matched), "publishers never matched the recorder"
        self.ledger.armed = True
        self.robot.running = True

    def start_running(self) -> None:
        """Recording, armed, and the arm moving on the policy's chunks."""
        self.start_recording()
        self.arm()
        assert self.wait_for(lambda: len(self.chunks) >= 2 and self.twists and not is_zero(self.twists[-1])), \
            f"the healthy graph never moved the arm ({len(self.chunks)} chunks, {len(self.twists)} twists)"
        self.mark()

    def inject(self, fault: Callable[[SyntheticRobot, float], None] | None) -> None:
        """Replace the robot's healthy ticks by `fault(robot, stamp)` from now on (None = healthy)."""
        self.fault_stamp = self.robot.now()
        self.robot.fault = fault
        self.mark()

    def mark(self) -> None:
        """From now on, `diagnostic`, `log` and `held` only look at what arrives after this point."""
        self._read_console()
        self.marks = {"diagnostics": len(self.diagnostics), "twists": len(self.twists),
                      "chunks": len(self.chunks), "logs": len(self.logs), "console": len(self.console_lines)}

    def observe(self, seconds: float) -> None:
        """Keep the graph running for `seconds` (an observation window, not a synchronisation)."""
        deadline = time.monotonic() + seconds
        self.wait_for(lambda: time.monotonic() >= deadline, timeout=seconds + 1.0)

    def held_throughout(self, seconds: float = 0.5) -> tuple[int, int]:
        """Observe for `seconds`; returns (commands in the window, non-zero ones among them)."""
        start = len(self.twists)
        self.observe(seconds)
        window = self.twists[start:]
        return len(window), sum(not is_zero(t) for t in window)

    def time_to_hold(self) -> float:
        """Seconds from the fault to the first command of the current run of zero twists."""
        recent = self.twists[self.marks["twists"]:]
        index = len(recent)
        while index > 0 and is_zero(recent[index - 1]):
            index -= 1
        if index == len(recent):
            return float("nan")
        return conv.time_to_seconds(recent[index].header.stamp) - self.fault_stamp

    def pre_fault_chunks_expired(self) -> bool:
        """A chunk from a set before the fault (possibly published late, the policy being slow) can
        no longer move the arm: its observation is older than the stale-observation timeout."""
        return self.robot.now() > self.fault_stamp + self.config.watchdog.observation_timeout

    def chunks_after_fault(self) -> list[ActionChunkMsg]:
        """Chunks computed from observations stamped after the fault was injected."""
        return [c for c in self.chunks if conv.time_to_seconds(c.header.stamp) > self.fault_stamp + 1e-6]

    # ---- observations ---------------------------------------------------------------------------

    def diagnostic(self, text: str, node: str = "", level: Level = Level.WARN):
        """The first status since the mark from `node` whose "name: message" contains `text` at >= `level`."""
        for status in self.diagnostics[self.marks["diagnostics"]:]:
            if status.name.startswith(node) and text in f"{status.name}: {status.message}" \
                    and status.level[0] >= level:
                return status
        return None

    def _read_console(self) -> None:
        if self.console is None:
            return
        captured = self.console.readouterr()
        self.console_out += captured.out
        for line in captured.err.splitlines():
            match = _CONSOLE_LINE.match(line)
            if match:
                self.console_lines.append(LogLine(match["name"], match["msg"]))

    def log(self, text: str, node: str = ""):
        """The first log line since the mark from `node` containing `text` (/rosout or console)."""
        self._read_console()
        for entry in self.logs[self.marks["logs"]:] + self.console_lines[self.marks["console"]:]:
            if entry.name.startswith(node) and text in entry.msg:
                return entry
        return None

    def log_since_start(self, text: str, node: str = ""):
        """Like `log`, but over everything logged since the rig started, ignoring the mark."""
        self._read_console()
        for entry in self.logs + self.console_lines:
            if entry.name.startswith(node) and text in entry.msg:
                return entry
        return None

    def console_logs(self, text: str, node: str = "") -> list[LogLine]:
        """Every console log line since the mark from `node` containing `text` (to count them:
        /rosout may carry the same lines)."""
        self._read_console()
        return [e for e in self.console_lines[self.marks["console"]:] if e.name.startswith(node) and text in e.msg]

    def held(self, count: int = 3) -> bool:
        """The last `count` commands since the mark are zero twists (MoveIt Servo: hold)."""
        recent = self.twists[self.marks["twists"]:]
        return len(recent) >= count and all(is_zero(t) for t in recent[-count:])

    def new_chunks(self) -> list[ActionChunkMsg]:
        return self.chunks[self.marks["chunks"]:]

    def wait_recovered(self, timeout: float = 8.0) -> bool:
        """After the fault is cleared: a new chunk arrives and the controller executes it."""
        self.mark()
        action = self.graph["action"]
        return self.wait_for(lambda: self.new_chunks() and action.controller.last_decision is not None
                             and not action.controller.last_decision.held, timeout)

    # ---- the recording ----------------------------------------------------------------------------

    def finish(self) -> RecordingCheck:
        """Stop every timer, let in-flight messages arrive, close the bag and compare it with the ledger."""
        self.robot.running = False
        for node in self.graph.all_nodes():
            for timer in node.timers:
                timer.cancel()
        ledger = self.ledger.disarm()
        published = {topic: sum(counter.values()) for topic, counter in ledger.items()}
        self.wait_for(lambda: all(self.recorder.stats().received[t] >= n for t, n in published.items()), timeout=10.0)
        self._quiesce()
        self.recorder.close()
        from rosbags.rosbag2 import Reader
        in_bag: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        with Reader(self.recorder.output) as reader:
            for connection, _, data in reader.messages():
                msg = deserialize_message(bytes(data), RECORDED_TOPICS[connection.topic])
                in_bag[connection.topic][message_key(msg)] += 1
        recorded = {topic: sum(min(n, in_bag[topic][h]) for h, n in ledger[topic].items()) for topic in published}
        return RecordingCheck(published, recorded, sum(sum(c.values()) for c in in_bag.values()))

    def _quiesce(self, quiet: float = 0.2, timeout: float = 3.0) -> None:
        """Spin until nothing new reached the recorder for `quiet` seconds (in-flight messages landed)."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            total = self.recorder.stats().total_received
            if total != last:
                last, since = total, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            self.executor.spin_once(timeout_sec=0.05)

    def destroy(self) -> None:
        executor = getattr(self, "executor", None)
        if executor is not None:
            executor.shutdown()
        self.graph.destroy()


def report(case: str, **observed) -> None:
    """Append one case's observations to $VLA3D_FAULT_REPORT (JSON lines) for docs/reliability.md."""
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({"case": case, **observed}, default=str) + "\n")


def describe(status) -> str:
    return f"[{Level(status.level[0]).name}] {status.name}: {status.message}" if status is not None else "(none)"


def conclude(rig: FaultRig, case: str, *, diagnostic, log, command: str, gap: str | None = None,
             gap_closed: bool = True, **extra) -> None:
    """Finish the recording (nothing may be lost), report the case, then settle a known gap.

    A known gap (a requirement the graph does not meet yet, reported to its owner) makes the case
    xfail once every other check passed; if the gap is closed the case fails, so the marker goes.
    """
    check = rig.finish()
    assert not check.lost, f"{case}: the recording lost messages {check.lost}"
    report(case, diagnostic=describe(diagnostic), log=log.msg if log is not None else "(none)", command=command,
           published=sum(check.published.values()), recorded=sum(check.recorded.values()),
           gap=gap if gap and not gap_closed else "", **extra)
    if gap is not None:
        if gap_closed:
            pytest.fail(f"{case}: known gap closed, remove it from the test: {gap}")
        pytest.xfail(f"known gap: {gap}")
