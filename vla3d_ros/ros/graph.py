"""The node graph, built from one runtime config by ONE function: `build_graph`.

Used by `vla3d bringup` / `vla3d replay` / the sim demo (all nodes in one process). The node
executables of `launch/bringup.launch.py` (`executables.py`) run one role each, camera_sync with
inference, on the same `NodeGraph` executors.

Roles: camera_sync + inference always share a process (the observation is handed over as a
Python object: no image round trip through DDS); action and markers may run apart. Without
tf2_ros (pip-only machines) transforms travel through an in-process `TransformCache`, so the
whole graph is one process; with tf2_ros the action node gets its own process, so a stalled
policy can never delay the controller's hold commands.
"""
from __future__ import annotations

import dataclasses
import functools
import select
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from rclpy.executors import Executor, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSCompatibility, qos_check_compatible

from vla3d_ros.ros import topics
from vla3d_ros.ros.action_node import ActionNode
from vla3d_ros.ros.camera_sync_node import CameraSyncNode
from vla3d_ros.ros.inference_node import InferenceNode, load_checkpoint_policy
from vla3d_ros.ros.markers_node import MarkersNode
from vla3d_ros.ros.tf import HAVE_TF2, TransformCache, make_transform_publisher, make_transform_source
from vla3d_ros.runtime.config import RuntimeConfig, load_runtime_config

ROLES = ("camera_sync", "inference", "action", "markers")


@dataclass
class NodeGraph:
    """The nodes of one process and what they share."""

    config: RuntimeConfig
    nodes: dict[str, Node]
    transforms: TransformCache | None         # in-process transforms (None with tf2_ros)
    extra_nodes: list[Node] = field(default_factory=list)

    def __getitem__(self, role: str) -> Node:
        return self.nodes[role]

    def all_nodes(self) -> list[Node]:
        return list(self.nodes.values()) + self.extra_nodes

    def transform_sink(self, node: Node):
        """Where a producer in this process (sim bridge, replay) writes transforms."""
        return make_transform_publisher(node, self.transforms)

    def add(self, node: Node) -> Node:
        self.extra_nodes.append(node)
        return node

    def published(self) -> Counter[str]:
        """topic -> messages the policy and markers nodes of this process have published on it."""
        return sum((node.published for node in self.nodes.values() if hasattr(node, "published")), Counter())

    def outputs_handled(self) -> bool:
        """Every policy output published here has been turned into markers by the markers node here
        (trivially true without one): until then more MarkerArrays are on their way."""
        markers = self.nodes.get("markers")
        published = self.published()
        return markers is None or all(markers.handled[topic] >= published[topic]
                                      for topic in (topics.ACTION_CHUNK, topics.INSTANCES))

    def start(self) -> None:
        """Configure and activate the inference node; RuntimeError saying why if it cannot (an
        unreachable policy server is not fatal: the node retries with backoff and says so)."""
        inference = self.nodes.get("inference")
        if inference is None:
            return
        from rclpy.lifecycle import TransitionCallbackReturn
        if inference.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            if inference.retrying:
                return
            raise RuntimeError(f"inference node failed to configure: {inference.status.message}")
        if inference.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError(f"inference node failed to activate: {inference.status.message}")

    def wait_connected(self, executor: Executor, timeout: float) -> None:
        """Spin until DDS has matched every in-process publisher with every in-process subscription
        of its topic; RuntimeError naming the pairs still apart after `timeout` wall seconds.

        The graph-level `count_publishers` / `count_subscribers` see an endpoint as soon as it is
        announced, before the reader and writer are matched, and a volatile sample published in
        between is lost: a lockstep player must not start on them.
        """
        nodes = self.all_nodes()
        if not spin_until(executor, lambda: not unmatched_endpoints(nodes), timeout=timeout):
            raise RuntimeError(f"DDS has not matched {unmatched_endpoints(nodes)} within {timeout} s")

    def executor(self, multithreaded: bool = True) -> Executor | PolicyThreadExecutor:
        """The executor of a real-time run (`multithreaded`): the inference node on a thread of its
        own (`PolicyThreadExecutor`) when the graph has one; else one thread (lockstep runs)."""
        context = self.config_context
        if multithreaded and "inference" in self.nodes:
            return PolicyThreadExecutor(self.all_nodes(), self.nodes["inference"], context)
        executor = MultiThreadedExecutor(num_threads=4, context=context) if multithreaded \
            else SingleThreadedExecutor(context=context)
        for node in self.all_nodes():
            executor.add_node(node)
        return executor

    @property
    def config_context(self):
        return next(iter(self.nodes.values())).context

    def destroy(self) -> None:
        for node in reversed(self.all_nodes()):
            node.destroy_node()
        self.nodes.clear()
        self.extra_nodes.clear()


class PolicyThreadExecutor:
    """Camera, control, marker and recorder callbacks on rclpy's `EventsExecutor` (its event queue
    is C++); the inference node on a `SingleThreadedExecutor` spun by a thread of its own, so a
    forward pass never delays a control tick. Drop-in for the calls the graph makes on an
    executor: `spin`, `spin_once`, `shutdown`.

    Why not one `MultiThreadedExecutor`: it rebuilds its wait set over every entity of every node
    on each spin in Python. Under camera load (the soak's 3 cameras x 30 Hz) that makes the process
    GIL-bound on the wait set, and inference steps wait behind camera callbacks past the watchdogs;
    the split takes the wait set out of Python (numbers in docs/reliability.md).
    """

    def __init__(self, nodes: Sequence[Node], policy_node: Node, context) -> None:
        from rclpy.experimental import EventsExecutor

        self.context = context
        self.events = EventsExecutor(context=context)
        self.policy = SingleThreadedExecutor(context=context)
        for node in nodes:
            (self.policy if node is policy_node else self.events).add_node(node)
        self._stopping = threading.Event()
        self._events_idle = threading.Event()   # no thread inside spin()
        self._events_idle.set()
        self._policy_thread = threading.Thread(target=self._spin_until_stopped, args=(self.policy,),
                                               name="vla3d_policy", daemon=True)
        self._policy_thread.start()

    def _spin_until_stopped(self, executor) -> None:
        # spin_once in a loop rather than spin(): an EventsExecutor.spin() running in one thread
        # does not return when another thread calls shutdown() (measured: the join hung).
        from rclpy.executors import ExternalShutdownException

        try:
            while not self._stopping.is_set() and self.context.ok():
                executor.spin_once(timeout_sec=0.05)
        except ExternalShutdownException:
            pass   # the context was shut down under us: the graph is going away

    def spin(self) -> None:
        self._events_idle.clear()
        try:
            self._spin_until_stopped(self.events)
        finally:
            self._events_idle.set()

    def spin_once(self, timeout_sec: float | None = None) -> None:
        self.events.spin_once(timeout_sec=timeout_sec)

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        """Stop both loops (each returns within one 0.05 s wait plus the callback it is running),
        then shut the executors down."""
        self._stopping.set()
        self._policy_thread.join()
        self._events_idle.wait()
        self.policy.shutdown()
        return self.events.shutdown(timeout_sec=timeout_sec)


def build_graph(config: RuntimeConfig | str | Path, *, roles: Sequence[str] = ROLES, context=None,
                use_sim_time: bool = False, trigger: str = "timer", checkpoint: str | None = None,
                policy_loader: Callable | None = None) -> NodeGraph:
    """Build the nodes of `roles` for one process from a runtime config (or its YAML path).

    Args:
        trigger: the inference node's "timer" (real robot) or "observation" (lockstep player).
        checkpoint: overrides `config.checkpoint` (and a policy server URL in `config.policy`).
        policy_loader: overrides how the inference node loads its policy (tests).
    """
    if not isinstance(config, RuntimeConfig):
        config = load_runtime_config(config)
    unknown = [role for role in roles if role not in ROLES]
    if unknown:
        raise ValueError(f"unknown roles {unknown}; choose from {ROLES}")
    if "inference" in roles and "camera_sync" not in roles:
        raise ValueError("the inference role needs the camera_sync role in the same process")
    if checkpoint is not None:
        config = dataclasses.replace(config, checkpoint=checkpoint, policy=None)
    if context is None:
        context = rclpy.get_default_context()
    cache = None if HAVE_TF2 else TransformCache()
    common = dict(use_sim_time=use_sim_time, context=context)
    nodes: dict[str, Node] = {}
    try:
        if "camera_sync" in roles:
            sync = CameraSyncNode(config, **common)
            sync.transforms = make_transform_source(sync, cache)
            nodes["camera_sync"] = sync
        if "inference" in roles:
            nodes["inference"] = InferenceNode(config, nodes["camera_sync"], trigger=trigger,
                                               policy_loader=policy_loader or functools.partial(
                                                   load_checkpoint_policy,
                                                   instruction_retrieval=config.instruction_retrieval), **common)
        if "action" in roles:
            action = ActionNode(config, **common)
            action.transforms = make_transform_source(action, cache)
            nodes["action"] = action
        if "markers" in roles:
            markers = MarkersNode(config, **common)
            markers.transforms = make_transform_source(markers, cache)
            nodes["markers"] = markers
    except BaseException:
        for node in nodes.values():
            node.destroy_node()
        raise
    return NodeGraph(config, nodes, cache)


def unmatched_endpoints(nodes: Sequence[Node]) -> list[str]:
    """Topics on which an in-process publisher and subscription (compatible QoS) are not matched yet.

    Counts are lower bounds checked from both ends (endpoints of other processes add to the
    matched counts, never to the in-process ones expected here).
    """
    publishers = [p for node in nodes for p in node.publishers]
    subscriptions = [s for node in nodes for s in node.subscriptions]

    def compatible(publisher, subscription) -> bool:
        return publisher.topic_name == subscription.topic_name and qos_check_compatible(
            publisher.qos_profile, subscription.qos_profile)[0] != QoSCompatibility.ERROR

    unmatched = {p.topic_name for p in publishers
                 if p.get_subscription_count() < sum(compatible(p, s) for s in subscriptions)}
    unmatched |= {s.topic_name for s in subscriptions
                  if s.get_publisher_count() < sum(compatible(p, s) for p in publishers)}
    return sorted(unmatched)


def spin_until(executor: Executor, condition: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Spin `executor` until `condition()` holds or `timeout` wall seconds pass; returns condition()."""
    deadline = time.monotonic() + timeout
    while not condition():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        executor.spin_once(timeout_sec=min(step, remaining))
    return True


@contextmanager
def spinning(executor: Executor, on_stop: Callable[[], None] | None = None) -> Iterator[threading.Event]:
    """Spin `executor` in a background thread for the duration of the block, then shut it down.

    The yielded event is set (and `on_stop` called) if spinning ends by itself: context shut down,
    a callback raised (re-raised when the block ends). The caller's thread stays free to wait for
    Ctrl-C: a KeyboardInterrupt raised asynchronously inside the executor can land in the middle of
    its thread pool's bookkeeping (a worker started but not yet registered), and the interpreter
    then waits forever at exit for a worker nobody tells to stop.
    """
    stopped = threading.Event()
    stopping = threading.Event()
    errors: list[BaseException] = []

    def spin() -> None:
        try:
            executor.spin()
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            if not stopping.is_set():   # (a callback handed over while shutting down is dropped)
                errors.append(error)
        finally:
            stopped.set()
            if on_stop is not None and not stopping.is_set():
                on_stop()

    thread = threading.Thread(target=spin, name="vla3d_executor", daemon=True)
    thread.start()
    try:
        yield stopped
    finally:
        stopping.set()
        executor.shutdown()
        thread.join()
    if errors:
        raise errors[0]


def serve(graph: NodeGraph, *, multithreaded: bool = True, duration: float | None = None,
          ready: Callable[[], None] = lambda: None) -> None:
    """Run `graph` until Ctrl-C / SIGTERM (`stop_on_sigint_and_sigterm`), its executor stopping by
    itself, or `duration` wall seconds (None: no limit); `ready()` once it is spinning.

    The executor spins in a background thread (`spinning`); this one only waits, so Ctrl-C lands here.
    """
    with CtrlCWait() as waiter, spinning(graph.executor(multithreaded=multithreaded), on_stop=waiter.wake):
        ready()
        waiter.wait(duration)


def run_graph_process(program: str, build: Callable[[object], NodeGraph], run: Callable[[NodeGraph], int],
                      args: Sequence[str] | None = None) -> int:
    """The life of a graph process (`vla3d bringup`, a node executable); its exit code.

    rclpy starts with the ROS arguments of `args` (None: none), `build(context)` makes the graph and
    `run(graph)` runs it. A bad config, parameter or start-up ends it with one line
    `<program>: error: ...` and 1; Ctrl-C / SIGTERM end it with 0; the graph is destroyed and rclpy
    shut down either way.
    """
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException

    stop_on_sigint_and_sigterm()
    context = rclpy.context.Context()
    rclpy.init(args=None if args is None else list(args), context=context)
    graph = None
    try:
        graph = build(context)
        return run(graph)
    except (ValueError, RuntimeError, ParameterException) as error:   # ConfigError is a ValueError
        print(f"{program}: error: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        if graph is not None:
            graph.destroy()
        if context.ok():
            rclpy.shutdown(context=context)


def stop_on_sigint_and_sigterm() -> None:
    """Make SIGINT and SIGTERM raise KeyboardInterrupt (main thread only).

    A process started in the background of a non-interactive shell inherits SIGINT as ignored, and
    Python then never raises KeyboardInterrupt: Ctrl-C (and launch's SIGINT, then SIGTERM) would be
    lost. Stopping on both is the contract of `vla3d bringup` and of every node executable.
    """
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, signal.default_int_handler)


class CtrlCWait:
    """Wait for Ctrl-C (KeyboardInterrupt, raised in `wait`), `wake()` or a timeout; main thread only.

    A lock or Event wait can miss Ctrl-C: a SIGINT that lands between the interpreter's last signal
    check and the blocking call wakes nothing, and the handler only runs once the wait ends. SIGINT
    also writes to the signal wakeup fd, which `select` watches, so it always ends the wait.
    """

    def __enter__(self) -> CtrlCWait:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        return self

    def wake(self) -> None:
        """From any thread: end the wait."""
        try:
            self._write.send(b"\0")
        except BlockingIOError:
            pass  # the buffer is full of wake-ups already

    def wait(self, timeout: float | None) -> None:
        select.select([self._read], [], [], timeout)

    def __exit__(self, *exc_info) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        self._read.close()
        self._write.close()
