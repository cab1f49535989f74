"""LockstepPlayer timing over real DDS: a slow answer is waited for (slow is not dead), a missing
one times out and the step goes on; and the graph helpers the lockstep runs rely on: every
in-process endpoint pair matched before the first step, a background executor whose errors reach
the caller."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ros_graph_fixtures import observation, runtime_config
from vla3d_ros.msg import ActionChunk as ActionChunkMsg
from vla3d_ros.ros import conversions as conv
from vla3d_ros.ros import topics
from vla3d_ros.ros.graph import spin_until, spinning, unmatched_endpoints
from vla3d_ros.ros.player import LockstepPlayer
from vla3d_ros.ros.qos import RELIABLE_QOS, SENSOR_QOS
from vla3d_ros.types import EE_DELTA_ACTION_NAMES, ActionChunk, Observation

TIMEOUT = 0.3   # wall seconds the player waits for a chunk


class Steps:
    """`StepSource`: one episode of `n` observations, 0.1 s apart."""

    def __init__(self, n: int) -> None:
        rng = np.random.default_rng(0)
        self.observations = [observation(t, rng) for t in range(n)]
        self.episodes = 0
        self.t = 0

    def reset(self) -> Observation | None:
        self.episodes += 1
        self.t = 0
        return self.observations[0] if self.episodes == 1 else None

    def advance(self, command) -> Observation | None:
        self.t += 1
        return self.observations[self.t] if self.t < len(self.observations) else None


class NoTransforms:
    def set_transform(self, parent, child, T_parent_child, stamp) -> None:
        pass


class SlowPolicy:
    """Answers every front image with a chunk of its stamp after `delay` wall seconds (blocking the
    executor, as a slow inference in the same process does)."""

    def __init__(self, node, config, delay: float) -> None:
        self.delay = delay
        self.publisher = node.create_publisher(ActionChunkMsg, topics.ACTION_CHUNK, RELIABLE_QOS)
        node.create_subscription(Image, config.cameras[0].topics.color, self.answer, SENSOR_QOS)

    def answer(self, image) -> None:
        time.sleep(self.delay)
        chunk = ActionChunk(np.zeros((2, 7), np.float32), EE_DELTA_ACTION_NAMES, 0.1,
                            stamp=conv.time_to_seconds(image.header.stamp))
        self.publisher.publish(conv.action_chunk_to_msg(chunk, "world"))


def play(ros_context, answer_delay: float | None, steps: int = 3):
    config = runtime_config()
    player = LockstepPlayer(config, Steps(steps), lambda node: NoTransforms(), inference_period=0.1,
                            consume_commands=False, timeout=TIMEOUT, context=ros_context)
    policy_node = rclpy.create_node("slow_policy", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    try:
        if answer_delay is not None:
            SlowPolicy(policy_node, config, answer_delay)
        for node in (player, policy_node):
            executor.add_node(node)
        assert spin_until(executor, lambda: not unmatched_endpoints([player, policy_node]), timeout=30.0)
        player.start()
        assert spin_until(executor, lambda: player.finished, timeout=60.0)
        return player.stats
    finally:
        executor.shutdown()
        player.destroy_node()
        policy_node.destroy_node()


def test_an_answer_slower_than_the_timeout_is_still_taken(ros_context):
    # Every step is due (period 0.1 s = step); each answer blocks the executor 2x the timeout.
    stats = play(ros_context, answer_delay=2 * TIMEOUT)
    assert stats.chunk_timeouts == 0
    np.testing.assert_allclose(stats.chunks, [1.0, 1.1, 1.2], atol=1e-6)


def test_a_missing_answer_times_out_and_the_step_goes_on(ros_context):
    start = time.monotonic()
    stats = play(ros_context, answer_delay=None)
    assert stats.steps == 3 and stats.chunk_timeouts == 3 and stats.chunks == []
    assert time.monotonic() - start >= 3 * TIMEOUT


def test_unmatched_endpoints_ignores_incompatible_qos_and_sees_matches(ros_context):
    a = rclpy.create_node("a", context=ros_context)
    b = rclpy.create_node("b", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    try:
        executor.add_node(a)
        executor.add_node(b)
        # best-effort writer, reliable reader: DDS never matches them, so nothing to wait for.
        a.create_publisher(String, "/t/never", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        b.create_subscription(String, "/t/never", lambda msg: None, RELIABLE_QOS)
        a.create_publisher(String, "/t/pair", RELIABLE_QOS)
        b.create_subscription(String, "/t/pair", lambda msg: None, SENSOR_QOS)
        assert spin_until(executor, lambda: not unmatched_endpoints([a, b]), timeout=30.0)
        assert next(p for p in a.publishers if p.topic_name == "/t/pair").get_subscription_count() == 1
    finally:
        executor.shutdown()
        a.destroy_node()
        b.destroy_node()


def test_spinning_hands_a_callback_error_to_the_caller(ros_context):
    node = rclpy.create_node("failing", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    woken = threading.Event()

    def fail() -> None:
        raise ValueError("callback failed")

    node.create_timer(0.01, fail)
    try:
        with pytest.raises(ValueError, match="callback failed"):
            with spinning(executor, on_stop=woken.set) as stopped:
                assert stopped.wait(30.0) and woken.is_set()
    finally:
        node.destroy_node()
