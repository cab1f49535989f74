"""Every custom message crosses a process boundary over real DDS (loopback, private domain)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.ros

PUBLISHER_SCRIPT = textwrap.dedent(
    """
    import sys, rclpy
    from geometry_msgs.msg import Point, Vector3
    from vla3d_ros.msg import ActionChunk, Instance3D, Instance3DArray

    def instance():
        return Instance3D(id=7, label="cube", score=0.9, uncertainty=0.1,
                          centroid=Point(x=0.5, y=-0.1, z=0.05),
                          extent=Vector3(x=0.02, y=0.02, z=0.02), num_completed_points=5)

    def chunk():
        message = ActionChunk(rows=2, cols=3, dimension_names=["dx", "dy", "dz"],
                              data=[0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
        message.header.frame_id = "base"
        message.header.stamp.sec = 12
        message.step_period.nanosec = 100_000_000
        message.inference_latency.nanosec = 42_000_000
        return message

    def array():
        message = Instance3DArray(instances=[instance(), instance()])
        message.header.frame_id = "base"
        return message

    factories = {"Instance3D": (Instance3D, instance), "ActionChunk": (ActionChunk, chunk),
                 "Instance3DArray": (Instance3DArray, array)}
    with rclpy.init():
        node = rclpy.create_node("foundation_publisher")
        publishers = {name: node.create_publisher(cls, "/foundation/" + name, 10)
                      for name, (cls, _) in factories.items()}
        # Publish until the parent has heard every type; it kills us when done.
        while rclpy.ok():
            for name, (_, make) in factories.items():
                publishers[name].publish(make())
            rclpy.spin_once(node, timeout_sec=0.05)
    """
)


def test_custom_messages_round_trip_between_processes(ros_context):
    from vla3d_ros.msg import ActionChunk, Instance3D, Instance3DArray

    import rclpy

    received: dict[str, object] = {}
    node = rclpy.create_node("foundation_subscriber", context=ros_context)
    for name, cls in {"Instance3D": Instance3D, "ActionChunk": ActionChunk,
                      "Instance3DArray": Instance3DArray}.items():
        node.create_subscription(cls, "/foundation/" + name,
                                 lambda msg, name=name: received.setdefault(name, msg), 10)
    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER_SCRIPT],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 30.0
        while len(received) < 3 and time.monotonic() < deadline and publisher.poll() is None:
            executor.spin_once(timeout_sec=0.1)
    finally:
        publisher.terminate()
        _, stderr = publisher.communicate(timeout=10)
        executor.shutdown()
        node.destroy_node()
    assert set(received) == {"Instance3D", "ActionChunk", "Instance3DArray"}, stderr.decode()[-2000:]

    chunk = received["ActionChunk"]
    assert (chunk.rows, chunk.cols) == (2, 3)
    assert list(chunk.dimension_names) == ["dx", "dy", "dz"]
    assert list(chunk.data) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert chunk.header.frame_id == "base" and chunk.header.stamp.sec == 12
    assert chunk.step_period.nanosec == 100_000_000
    assert chunk.inference_latency.nanosec == 42_000_000

    instance = received["Instance3D"]
    assert instance.id == 7 and instance.label == "cube"
    assert instance.score == pytest.approx(0.9) and instance.uncertainty == pytest.approx(0.1)
    assert (instance.centroid.x, instance.centroid.y, instance.centroid.z) == pytest.approx((0.5, -0.1, 0.05))
    assert instance.extent.z == pytest.approx(0.02) and instance.num_completed_points == 5

    array = received["Instance3DArray"]
    assert array.header.frame_id == "base" and len(array.instances) == 2
    assert array.instances[1].id == 7
