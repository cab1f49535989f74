"""Approximate-time synchronisation on scripted timelines.

The timelines and expected outputs are message_filters' own (test/test_approximate_time_policy.cpp,
ros2/message_filters); the diagrams use one column per second, lower case input 0, upper case
input 1. Our synchroniser must emit exactly the same sets in the same order.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from vla3d_ros.runtime.synchronizer import ApproximateTimeSynchronizer, CameraSetAssembler, StampedHistory


def run(num_inputs, timeline, queue_size, slop=math.inf, bounds=None):
    """Feed (stamp, input) pairs in order; return the emitted stamp tuples."""
    emitted = []
    sync = ApproximateTimeSynchronizer(num_inputs, queue_size, slop, lambda items, stamps: emitted.append(stamps),
                                       inter_message_lower_bounds=bounds)
    for stamp, index in timeline:
        sync.add(index, float(stamp), (stamp, index))
        assert max(sync.queue_depths()) <= queue_size
    return emitted, sync


def test_exact_match():
    # A: a..b..c   B: A..B..C  ->  every pair as soon as it is complete
    out, _ = run(2, [(0, 0), (0, 1), (3, 0), (3, 1), (6, 0), (6, 1)], 10)
    assert out == [(0, 0), (3, 3), (6, 6)]


def test_perfect_match_waits_for_proof_of_optimality():
    # A: a..b..c.   B: .A..B..C  -> c/C is not emitted: a better partner for c may still come
    out, _ = run(2, [(0, 0), (1, 1), (3, 0), (4, 1), (6, 0), (7, 1)], 10)
    assert out == [(0, 1), (3, 4)]


def test_imperfect_match():
    # A: a.xb..c.   B: .A...B.C  -> x and b are skipped, c pairs with B
    out, _ = run(2, [(0, 0), (1, 1), (2, 0), (3, 0), (5, 1), (6, 0), (7, 1)], 10)
    assert out == [(0, 1), (6, 5)]


def test_acceleration():
    out, _ = run(2, [(0, 0), (7, 1), (12, 0), (15, 1), (17, 0), (18, 1)], 10)
    assert out == [(12, 7), (17, 18)]


TIMELINE_DROPS = [(0, 0), (1, 1), (3, 1), (4, 0), (7, 1), (8, 0), (10, 0), (11, 1), (13, 0), (14, 1)]


def test_dropped_messages_with_too_small_queue():
    out, sync = run(2, TIMELINE_DROPS, 1)
    assert out == [(4, 3), (10, 11)]
    assert sum(sync.dropped()) > 0


def test_queue_of_two_is_just_enough():
    out, _ = run(2, TIMELINE_DROPS, 2)
    assert out == [(0, 1), (4, 3), (8, 7), (10, 11)]


def test_long_queue():
    timeline = [(t, 0) for t in range(9)] + [(3, 1), (9, 0), (10, 0), (11, 0), (12, 0), (10, 1), (13, 0)]
    out, _ = run(2, timeline, 5)
    assert out == [(10, 10)]


def test_double_publish():
    # One arrival completes two sets at once: a/A and b/B, in order.
    out, _ = run(2, [(0, 0), (1, 1), (3, 1), (3, 0)], 10)
    assert out == [(0, 1), (3, 3)]


def test_four_topics():
    timeline = [(0, 0), (1, 1), (2, 2), (3, 3), (5, 0), (5, 3), (6, 1), (6, 2), (8, 0), (9, 1), (10, 2), (11, 3),
                (10, 0), (13, 0), (14, 1)]
    out, _ = run(4, timeline, 10)
    assert out == [(0, 1, 2, 3), (5, 6, 6, 5), (10, 9, 10, 11)]


def test_early_publish():
    # One newer message on the pivot's side proves the first set optimal.
    out, _ = run(4, [(0, 0), (1, 1), (2, 2), (3, 3), (7, 0)], 10)
    assert out == [(0, 1, 2, 3)]


@pytest.mark.parametrize("bound, expected", [(1.5, [(0, 1), (3, 4)]), (2.0, [(0, 1), (3, 4), (6, 7)])])
def test_rate_bound_proves_optimality_earlier(bound, expected):
    out, _ = run(2, [(0, 0), (1, 1), (3, 0), (4, 1), (6, 0), (7, 1)], 10, bounds=[bound, 0.0])
    assert out == expected


def test_slop_rejects_sets_spanning_more():
    # Pairs 0.3 s apart: emitted with slop 0.5, never with slop 0.2.
    timeline = [(t + dt, i) for t in range(0, 20, 2) for i, dt in ((0, 0.0), (1, 0.3))]
    loose, _ = run(2, timeline, 10, slop=0.5)
    tight, sync = run(2, timeline, 10, slop=0.2)
    assert len(loose) == 9 and all(abs(b - a - 0.3) < 1e-9 for a, b in loose)
    assert tight == [] and max(sync.queue_depths()) <= 10


def test_queues_stay_bounded_and_every_message_accounted():
    # 3 inputs at 30 Hz with jitter, one input losing 20% of its messages: the queues never
    # exceed queue_size and received = emitted + held + dropped for every input.
    rng_timeline = np.random.default_rng(0)
    queue_size = 4
    emitted = []
    sync = ApproximateTimeSynchronizer(3, queue_size, 0.01, lambda items, stamps: emitted.append(stamps))
    events = []
    for k in range(600):
        for i in range(3):
            if i == 2 and rng_timeline.random() < 0.2:
                continue
            events.append((k / 30 + rng_timeline.uniform(-0.003, 0.003), k / 30 + 0.01 * i, i))
    for stamp, _, i in sorted(events, key=lambda e: e[1]):
        sync.add(i, stamp, None)
        assert max(sync.queue_depths()) <= queue_size
    assert len(emitted) > 400
    assert all(max(s) - min(s) <= 0.01 + 1e-9 for s in emitted)
    for i in range(3):
        assert sync.received[i] == len(emitted) + sync.queue_depths()[i] + sync.dropped()[i]


def test_out_of_order_messages_are_counted_and_dropped():
    out, sync = run(2, [(5, 0), (4, 0), (5, 1)], 10)
    assert out == [(5, 5)] and sync.out_of_order == [1, 0]


def test_camera_set_assembler_groups_streams_per_camera():
    sets = []
    assembler = CameraSetAssembler([("front", True), ("wrist", False)], queue_size=5, slop=0.02, callback=sets.append)
    assert assembler.inputs == (("front", "color"), ("front", "camera_info"), ("front", "depth"),
                                ("wrist", "color"), ("wrist", "camera_info"))
    for k in range(4):
        t = 1.0 + k / 10
        for camera, stream in assembler.inputs:
            assembler.add(camera, stream, t + (0.005 if camera == "wrist" else 0.0), f"{camera}/{stream}@{k}")
    # The newest set waits for proof of optimality (a later message), as in message_filters.
    assert len(sets) >= 3
    first = sets[0]
    assert set(first.frames) == {"front", "wrist"}
    assert first.frames["front"].depth == "front/depth@0" and first.frames["wrist"].depth is None
    assert first.frames["wrist"].color == "wrist/color@0"
    assert first.stamp == pytest.approx(1.005) and first.span == pytest.approx(0.005)


def test_camera_set_assembler_resets_on_clock_jump_back():
    sets = []
    assembler = CameraSetAssembler([("front", False), ("side", False)], queue_size=5, slop=0.02, callback=sets.append)

    def publish(t):
        for camera, stream in assembler.inputs:
            assembler.add(camera, stream, t, t)

    for t in (100.0, 100.1, 100.2):
        publish(t)
    before = len(sets)
    for t in (0.0, 0.1, 0.2):   # the bag looped
        publish(t)
    assert assembler.clock_jumps == 1
    assert len(sets) > before and sets[-1].stamp < 1.0
    # A small reordering is not a clock jump: that message is refused instead.
    assert assembler.add("front", "color", 0.15, None) is False
    assert assembler.out_of_order("front", "color") == 1


def test_stamped_history_gives_the_item_nearest_the_stamp():
    history = StampedHistory(maxlen=4)
    with pytest.raises(LookupError):
        history.nearest(1.0)
    for stamp in (1.00, 1.01, 1.02, 1.03, 1.04):      # a 100 Hz joint stream; 1.00 falls out
        history.add(stamp, f"joints@{stamp:.2f}")
    assert len(history) == 4
    assert history.nearest(1.021) == "joints@1.02"    # not the newest: the camera set's instant
    assert history.nearest(0.5) == "joints@1.01"      # older than everything kept: the oldest kept
    assert history.nearest(9.0) == "joints@1.04"
    history.add(1.04, "joints@1.04 again")            # equal stamps: the newer wins
    assert history.nearest(1.04) == "joints@1.04 again"
    with pytest.raises(ValueError, match="maxlen"):
        StampedHistory(0)
