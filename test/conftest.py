"""Suite-wide fixtures: a private ROS 2 domain per test run, seeded RNGs, headless rendering."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

# A private DDS domain per test run so parallel runs on one machine never hear each other;
# discovery stays on this host. Set before anything imports rclpy.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tests use tiny tensors: on a loaded 2-core machine intra-op threads make them ~5x slower.
# Tests that measure parallel behaviour set their own thread count.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def ros_context():
    """An rclpy context for one test, shut down afterwards (nodes must be destroyed by the test)."""
    import rclpy

    context = rclpy.context.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown(context=context)
