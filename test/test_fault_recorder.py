"""The bag recorder under a slow disk: callbacks never wait for the disk (write-behind), nothing is
dropped, and the bag read back holds every message in order; a failing disk is reported."""
from __future__ import annotations

import threading
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import String

from fault_rig import report
from vla3d_ros.ros.graph import spin_until
from vla3d_ros.ros.qos import RELIABLE_QOS
from vla3d_ros.ros.recorder import BagRecorder, count_bag_messages
from vla3d_ros.runtime.diagnostics import Level

MESSAGES = 200
DISK_DELAY = 0.005   # s per message written: 1 s for the burst, far slower than it arrives


def test_slow_disk_never_blocks_callbacks_and_loses_nothing(ros_context, tmp_path):
    recorder = BagRecorder(tmp_path / "bag", {"/r/text": String}, context=ros_context)
    writer = recorder._writer
    write = writer.write
    release = threading.Event()

    def slow_write(*args):
        release.wait(5.0)      # the disk stalls until the burst has been received
        time.sleep(DISK_DELAY)
        write(*args)
    writer.write = slow_write
    node = rclpy.create_node("r_source", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    try:
        publisher = node.create_publisher(String, "/r/text", RELIABLE_QOS)
        executor.add_node(recorder)
        executor.add_node(node)
        assert spin_until(executor, lambda: publisher.get_subscription_count() == 1, timeout=5.0)
        for index in range(MESSAGES):
            publisher.publish(String(data=f"message {index}"))
            executor.spin_once(timeout_sec=0)   # receive while publishing: RELIABLE_QOS keeps only 10
        # Everything is received while the disk has written nothing: the callbacks did not wait for it.
        assert spin_until(executor, lambda: recorder.stats().total_received == MESSAGES, timeout=10.0)
        stalled = recorder.stats()
        assert stalled.total_written == 0 and stalled.queue_depth == MESSAGES
        release.set()
        final = recorder.close(timeout=30.0)
        assert final.total_written == MESSAGES and final.queue_depth == 0 and not final.errors
        assert count_bag_messages(tmp_path / "bag") == {"/r/text": MESSAGES}
        from rosbags.rosbag2 import Reader
        from vla3d_ros.data.bags import typestore
        store = typestore()
        with Reader(tmp_path / "bag") as reader:
            texts = [store.deserialize_cdr(raw, c.msgtype).data for c, _, raw in reader.messages()]
        assert texts == [f"message {index}" for index in range(MESSAGES)]
        report("recorder: disk stalls during a burst of 200 messages",
               diagnostic=f"[OK] recorder: queue depth peaked at {final.max_queue_depth}",
               log="(none)", command="n/a", published=MESSAGES, recorded=final.total_written, gap="")
    finally:
        release.set()
        executor.shutdown()
        node.destroy_node()
        recorder.destroy_node()


def test_failing_disk_is_reported_not_raised(ros_context, tmp_path):
    recorder = BagRecorder(tmp_path / "bag", {"/r/text": String}, context=ros_context, warn_queue_bytes=1)
    node = rclpy.create_node("r_source", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)

    def full_disk(*args):
        raise OSError(28, "No space left on device")
    recorder._writer.write = full_disk
    try:
        publisher = node.create_publisher(String, "/r/text", RELIABLE_QOS)
        executor.add_node(recorder)
        executor.add_node(node)
        assert spin_until(executor, lambda: publisher.get_subscription_count() == 1, timeout=5.0)
        publisher.publish(String(data="lost to a full disk"))
        assert spin_until(executor, lambda: recorder.stats().errors, timeout=5.0)
        status = recorder.statuses()[0]
        assert status.level == Level.ERROR and "No space left on device" in status.message
        assert recorder.stats().total_written == 0
    finally:
        executor.shutdown()
        node.destroy_node()
        recorder.destroy_node()
