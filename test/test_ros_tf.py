"""TransformCache (the in-process TransformSource): exact lookups in both directions, static
transforms at every stamp, and a dynamic transform refused once it is older than the stamp asked
for by more than `max_dynamic_age` (a moving camera whose TF stopped has no pose)."""
from __future__ import annotations

import numpy as np
import pytest

from vla3d_ros.geometry import invert_transform
from vla3d_ros.geometry.rotations import euler_xyz_to_matrix
from vla3d_ros.ros.tf import TransformCache


def pose(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3] = euler_xyz_to_matrix(*rng.uniform(-np.pi, np.pi, 3))
    T[:3, 3] = rng.uniform(-1, 1, 3)
    return T


def test_lookup_returns_the_newest_transform_not_after_the_stamp_in_both_directions():
    cache = TransformCache(max_dynamic_age=0.1)
    cache.set_transform("world", "wrist", pose(0), 1.00)
    cache.set_transform("world", "wrist", pose(1), 1.05)
    np.testing.assert_array_equal(cache.lookup_transform("world", "wrist", 1.00), pose(0))
    np.testing.assert_array_equal(cache.lookup_transform("world", "wrist", 1.04), pose(0))
    np.testing.assert_array_equal(cache.lookup_transform("world", "wrist", 1.05), pose(1))
    np.testing.assert_allclose(cache.lookup_transform("wrist", "world", 1.05), invert_transform(pose(1)), atol=1e-12)
    np.testing.assert_array_equal(cache.lookup_transform("world", "wrist", None), pose(1))
    with pytest.raises(LookupError, match="no transform world <- wrist at t=0.990"):
        cache.lookup_transform("world", "wrist", 0.99)


def test_a_dynamic_transform_older_than_the_limit_is_refused_a_static_one_never():
    cache = TransformCache(max_dynamic_age=0.1)
    cache.set_transform("world", "wrist", pose(0), 1.0)
    cache.set_transform("world", "front", pose(2), None)
    np.testing.assert_array_equal(cache.lookup_transform("world", "wrist", 1.1), pose(0))   # at the limit
    for target, source in (("world", "wrist"), ("wrist", "world")):
        with pytest.raises(LookupError, match=f"{target} <- {source} at t=1.150 is stale: the newest is 0.150 s older"):
            cache.lookup_transform(target, source, 1.15)
    np.testing.assert_array_equal(cache.lookup_transform("world", "front", 1e6), pose(2))
    # The transform resumes: the pose is known again.
    cache.set_transform("world", "wrist", pose(1), 1.2)
    np.testing.assert_array_equal(cache.lookup_transform("world", "wrist", 1.25), pose(1))


def test_max_dynamic_age_must_not_be_negative_nor_the_reset_jump_zero():
    with pytest.raises(ValueError, match="-0.5"):
        TransformCache(max_dynamic_age=-0.5)
    with pytest.raises(ValueError, match="timeline_reset_jump"):
        TransformCache(timeline_reset_jump=0.0)


def test_a_late_transform_is_filed_in_time_order_a_large_jump_back_starts_a_new_timeline():
    cache = TransformCache(max_dynamic_age=0.1, timeline_reset_jump=1.0)
    cache.set_transform("world", "wrist", pose(0), 1.00)
    cache.set_transform("world", "wrist", pose(1), 1.10)
    cache.set_transform("world", "wrist", pose(2), 1.05)   # reordered: arrives after 1.10
    np.testing.assert_array_equal(cache.lookup_transform("world", "wrist", 1.02), pose(0))
    np.testing.assert_array_equal(cache.lookup_transform("world", "wrist", 1.07), pose(2))
    np.testing.assert_array_equal(cache.lookup_transform("world", "wrist", 1.12), pose(1))
    # The clock jumps back by more than the limit (a bag looped): the old history is gone.
    cache.set_transform("world", "wrist", pose(3), 0.02)
    np.testing.assert_array_equal(cache.lookup_transform("world", "wrist", 0.05), pose(3))
    with pytest.raises(LookupError, match="stale"):
        cache.lookup_transform("world", "wrist", 1.12)


def test_a_late_transform_older_than_the_whole_bounded_history_is_dropped():
    cache = TransformCache(history=3, max_dynamic_age=0.5)
    for i, stamp in enumerate((1.0, 1.1, 1.2)):
        cache.set_transform("world", "wrist", pose(i), stamp)
    cache.set_transform("world", "wrist", pose(7), 0.95)          # full and older than all: dropped
    with pytest.raises(LookupError, match="no transform"):
        cache.lookup_transform("world", "wrist", 0.97)
    cache.set_transform("world", "wrist", pose(8), 1.15)          # full: the oldest makes room
    np.testing.assert_array_equal(cache.lookup_transform("world", "wrist", 1.16), pose(8))
    with pytest.raises(LookupError, match="no transform"):
        cache.lookup_transform("world", "wrist", 1.05)
