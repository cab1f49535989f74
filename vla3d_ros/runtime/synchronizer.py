"""Approximate-time synchronisation with message_filters' semantics, and camera-set assembly.

`ApproximateTimeSynchronizer` re-implements the ApproximateTime sync policy of ROS
message_filters (the C++ policy, BSD, Willow Garage; algorithm by Romain Thibaux) in plain
Python so the runtime behaves identically whether or not message_filters is installed (it is not
on PyPI). Semantics, as in message_filters:

- one bounded queue per input (`queue_size` messages, counting the ones held back while a
  candidate is searched); on overflow the oldest message of that input is dropped;
- a *pivot* algorithm: a candidate set (one message per input) is emitted only once no future
  message can give a set with a smaller time span (adjusted by `age_penalty`, default 0.1, so
  older sets win ties). The input whose head is newest is the pivot; a candidate is provably
  optimal once every other input has a message newer than the pivot, or an inter-message lower
  bound proves no better message can still arrive;
- `slop` is message_filters' max interval duration: a set spanning more than `slop` seconds is
  never emitted (`math.inf` = unbounded, the C++ default);
- each message is emitted at most once, in stamp order per input; stamps must be monotonic per
  input (message_filters warns and degrades otherwise; here an out-of-order message is counted
  and dropped, and a large backwards jump, e.g. a bag restarting, resets all queues).

Stamps are float seconds; internally integer nanoseconds so comparisons are exact.

`CameraSetAssembler` builds the per-camera streams (color, camera_info, optional depth) on top:
all streams of all cameras go through one synchroniser, and each emitted set becomes a
`CameraSet` with one `CameraFrame` per camera.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from vla3d_ros.runtime.diagnostics import Level, Status, StreamMonitor

_NO_PIVOT = -1


def _to_ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


@dataclass
class _Stamped:
    stamp_ns: int
    item: Any


class ApproximateTimeSynchronizer:
    """message_filters' ApproximateTime policy for `num_inputs` streams.

    Args:
        num_inputs: number of input streams (>= 2).
        queue_size: messages kept per input while waiting for a match (>= 1).
        slop: largest allowed stamp span of an emitted set, seconds (math.inf = unbounded).
        callback: called as `callback(items, stamps)` with one item and one stamp per input.
        age_penalty: message_filters' age penalty (>= 0); favours emitting older sets.
        inter_message_lower_bounds: optional per-input minimum stamp gap (seconds); lets the
            policy prove optimality earlier, i.e. lowers latency for inputs of known rate.
    """

    def __init__(
        self,
        num_inputs: int,
        queue_size: int,
        slop: float,
        callback: Callable[[tuple, tuple], None],
        age_penalty: float = 0.1,
        inter_message_lower_bounds: Sequence[float] | None = None,
    ) -> None:
        if num_inputs < 2:
            raise ValueError(f"num_inputs must be >= 2, got {num_inputs}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not slop >= 0:
            raise ValueError(f"slop must be >= 0 s, got {slop}")
        if not age_penalty >= 0:
            raise ValueError(f"age_penalty must be >= 0, got {age_penalty}")
        bounds = [0.0] * num_inputs if inter_message_lower_bounds is None else list(inter_message_lower_bounds)
        if len(bounds) != num_inputs or any(not b >= 0 for b in bounds):
            raise ValueError(f"inter_message_lower_bounds must be {num_inputs} values >= 0, got {bounds}")
        self.num_inputs = num_inputs
        self.queue_size = queue_size
        self.slop = slop
        self.callback = callback
        self.age_penalty = age_penalty
        self._max_span_ns = math.inf if math.isinf(slop) else _to_ns(slop)
        self._lower_bounds_ns = [_to_ns(b) for b in bounds]
        self.received = [0] * num_inputs
        self.emitted_sets = 0
        # received - emitted - held = dropped (overflow, never matched, out of order, reset).
        self._emitted_per_input = [0] * num_inputs
        self.out_of_order = [0] * num_inputs
        self.resets = 0
        self._last_stamp_ns: list[int | None] = [None] * num_inputs
        self._clear()

    # ---- public ---------------------------------------------------------------------------------

    def add(self, input_index: int, stamp: float, item: Any) -> None:
        """Offer one message; may call the callback (possibly more than once)."""
        if not 0 <= input_index < self.num_inputs:
            raise IndexError(f"input_index must be in [0, {self.num_inputs}), got {input_index}")
        if not math.isfinite(stamp):
            raise ValueError(f"stamp must be finite seconds, got {stamp}")
        stamp_ns = _to_ns(stamp)
        self.received[input_index] += 1
        last = self._last_stamp_ns[input_index]
        if last is not None and stamp_ns < last:
            self.out_of_order[input_index] += 1
            return
        self._last_stamp_ns[input_index] = stamp_ns
        queue = self._queues[input_index]
        queue.append(_Stamped(stamp_ns, item))
        if len(queue) == 1:
            self._non_empty += 1
            if self._non_empty == self.num_inputs:
                self._process()
        # During `_process` the queue may hold queue_size + 1 messages (as in message_filters).
        if len(queue) + len(self._past[input_index]) > self.queue_size:
            self._non_empty = 0
            self._recover_all()
            queue.popleft()
            self._has_dropped[input_index] = True
            if self._pivot != _NO_PIVOT:
                self._candidate = None
                self._pivot = _NO_PIVOT
                self._process()

    def reset(self) -> None:
        """Forget every queued message (e.g. after the clock jumped backwards)."""
        self.resets += 1
        self._last_stamp_ns = [None] * self.num_inputs
        self._clear()

    def queue_depths(self) -> list[int]:
        """Messages currently held per input (never more than `queue_size` between calls)."""
        return [len(q) + len(p) for q, p in zip(self._queues, self._past)]

    def dropped(self) -> list[int]:
        """Messages per input that were received but will never be emitted."""
        depths = self.queue_depths()
        return [self.received[i] - self._emitted_per_input[i] - depths[i] for i in range(self.num_inputs)]

    # ---- the ApproximateTime policy ------------------------------------------------------------

    def _clear(self) -> None:
        self._queues: list[deque[_Stamped]] = [deque() for _ in range(self.num_inputs)]
        self._past: list[list[_Stamped]] = [[] for _ in range(self.num_inputs)]
        self._non_empty = 0
        self._candidate: list[_Stamped] | None = None
        self._candidate_start = 0
        self._candidate_end = 0
        self._pivot = _NO_PIVOT
        self._pivot_time = 0
        self._has_dropped = [False] * self.num_inputs

    @staticmethod
    def _boundary(times: Sequence[int], newest: bool) -> tuple[int, int]:
        """(index, stamp) of the oldest or newest of `times`.

        Ties as in message_filters: the oldest goes to the lowest index, the newest to the highest.
        """
        index, time = 0, times[0]
        for i in range(1, len(times)):
            if (times[i] >= time) if newest else (times[i] < time):
                index, time = i, times[i]
        return index, time

    def _head_boundary(self, newest: bool) -> tuple[int, int]:
        return self._boundary([q[0].stamp_ns for q in self._queues], newest)

    def _virtual_time(self, i: int) -> int:
        """Head stamp of input i, or the earliest stamp its next message can have."""
        if self._queues[i]:
            return self._queues[i][0].stamp_ns
        earliest_next = self._past[i][-1].stamp_ns + self._lower_bounds_ns[i]
        return max(earliest_next, self._pivot_time)

    def _virtual_boundary(self, newest: bool) -> tuple[int, int]:
        return self._boundary([self._virtual_time(i) for i in range(self.num_inputs)], newest)

    def _delete_front(self, i: int) -> None:
        self._queues[i].popleft()
        if not self._queues[i]:
            self._non_empty -= 1

    def _move_front_to_past(self, i: int) -> None:
        self._past[i].append(self._queues[i].popleft())
        if not self._queues[i]:
            self._non_empty -= 1

    def _make_candidate(self) -> None:
        self._candidate = [q[0] for q in self._queues]
        for past in self._past:
            past.clear()

    def _recover(self, i: int, count: int | None = None) -> None:
        """Put back the last `count` (default all) held-back messages of input i."""
        past, queue = self._past[i], self._queues[i]
        count = len(past) if count is None else count
        for _ in range(count):
            queue.appendleft(past.pop())
        if queue:
            self._non_empty += 1

    def _recover_all(self) -> None:
        for i in range(self.num_inputs):
            self._recover(i)

    def _publish_candidate(self) -> None:
        candidate = self._candidate
        self._candidate = None
        self._pivot = _NO_PIVOT
        self._non_empty = 0
        for i in range(self.num_inputs):
            past, queue = self._past[i], self._queues[i]
            while past:
                queue.appendleft(past.pop())
            queue.popleft()  # the candidate's own message for this input
            if queue:
                self._non_empty += 1
            self._emitted_per_input[i] += 1
        self.emitted_sets += 1
        self.callback(tuple(m.item for m in candidate), tuple(m.stamp_ns / 1e9 for m in candidate))

    def _process(self) -> None:
        penalty = 1.0 + self.age_penalty
        while self._non_empty == self.num_inputs:
            end_index, end_time = self._head_boundary(newest=True)
            start_index, start_time = self._head_boundary(newest=False)
            for i in range(self.num_inputs):
                if i != end_index:
                    # No dropped message could have beaten the ones we hold, so input i may
                    # become the pivot again.
                    self._has_dropped[i] = False
            if self._pivot == _NO_PIVOT:
                if end_time - start_time > self._max_span_ns or self._has_dropped[end_index]:
                    self._delete_front(start_index)
                    continue
                self._make_candidate()
                self._candidate_start, self._candidate_end = start_time, end_time
                self._pivot, self._pivot_time = end_index, end_time
                self._move_front_to_past(start_index)
            else:
                if (end_time - self._candidate_end) * penalty >= start_time - self._candidate_start:
                    self._move_front_to_past(start_index)  # not better than the candidate
                else:
                    self._make_candidate()
                    self._candidate_start, self._candidate_end = start_time, end_time
                    self._move_front_to_past(start_index)
            if start_index == self._pivot:
                self._publish_candidate()  # every candidate for this pivot has been seen
            elif (end_time - self._candidate_end) * penalty >= self._pivot_time - self._candidate_start:
                # Any future candidate contains [pivot_time, end_time], already too long.
                self._publish_candidate()
            elif self._non_empty < self.num_inputs:
                self._try_prove_optimal_with_bounds(penalty)

    def _try_prove_optimal_with_bounds(self, penalty: float) -> None:
        """Optimistically advance empty inputs by their rate bound; publish if still optimal."""
        virtual_moves = [0] * self.num_inputs
        while True:
            end_index, end_time = self._virtual_boundary(newest=True)
            start_index, start_time = self._virtual_boundary(newest=False)
            if (end_time - self._candidate_end) * penalty >= self._pivot_time - self._candidate_start:
                self._publish_candidate()
                return
            if (end_time - self._candidate_end) * penalty < start_time - self._candidate_start:
                # An optimistic future candidate beats ours: undo the virtual moves and wait.
                self._non_empty = 0
                for i in range(self.num_inputs):
                    self._recover(i, virtual_moves[i])
                return
            self._move_front_to_past(start_index)
            virtual_moves[start_index] += 1


# ---- camera sets -------------------------------------------------------------------------------

STREAMS = ("color", "camera_info", "depth")


@dataclass
class CameraFrame:
    """The synchronised messages of one camera (whatever the node passed in as items)."""

    color: Any
    camera_info: Any
    depth: Any = None
    stamps: dict[str, float] = field(default_factory=dict)


@dataclass
class CameraSet:
    """One synchronised set: a frame per camera; `stamp` is the newest stamp in the set."""

    stamp: float
    frames: dict[str, CameraFrame]

    @property
    def span(self) -> float:
        stamps = [s for frame in self.frames.values() for s in frame.stamps.values()]
        return max(stamps) - min(stamps)


class CameraSetAssembler:
    """Synchronises color + camera_info (+ depth) of every camera into `CameraSet`s.

    Args:
        cameras: (name, has_depth) per camera, in observation order.
        queue_size, slop: as in `ApproximateTimeSynchronizer`.
        callback: `callback(camera_set)`.
        max_clock_jump_back: a stamp this many seconds older than the newest stamp seen on its
            stream means the clock jumped back (a looping bag, a restarted simulator): all queues
            are reset instead of waiting for the old timeline to catch up.
        expected_rate, stream_timeout: per-stream diagnostics thresholds (Hz, s); see
            `StreamMonitor`. Arrivals are recorded when `add` is given an `arrival` time.
    """

    def __init__(
        self,
        cameras: Sequence[tuple[str, bool]],
        queue_size: int,
        slop: float,
        callback: Callable[[CameraSet], None],
        max_clock_jump_back: float = 1.0,
        expected_rate: float | None = None,
        stream_timeout: float = 1.0,
    ) -> None:
        if not cameras:
            raise ValueError("at least one camera is required")
        names = [name for name, _ in cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        self.callback = callback
        self.max_clock_jump_back = max_clock_jump_back
        self._inputs: list[tuple[str, str]] = []
        for name, has_depth in cameras:
            self._inputs += [(name, "color"), (name, "camera_info")] + ([(name, "depth")] if has_depth else [])
        self._index = {key: i for i, key in enumerate(self._inputs)}
        self._newest_ns: list[int | None] = [None] * len(self._inputs)
        self.clock_jumps = 0
        self.sets_emitted = 0
        self._sync = ApproximateTimeSynchronizer(len(self._inputs), queue_size, slop, self._on_match)
        self.monitors = {key: StreamMonitor(f"{key[0]}/{key[1]}", expected_rate=expected_rate, timeout=stream_timeout)
                         for key in self._inputs}

    @property
    def inputs(self) -> tuple[tuple[str, str], ...]:
        """(camera, stream) of every synchroniser input."""
        return tuple(self._inputs)

    def add(self, camera: str, stream: str, stamp: float, item: Any, arrival: float | None = None) -> bool:
        """Offer one message of `camera`'s `stream` ("color" | "camera_info" | "depth").

        `arrival`: receive time on the stamp's clock, for rate / lateness diagnostics.
        Returns False if the message was refused (out-of-order stamp); KeyError for an unknown stream.
        """
        key = (camera, stream)
        if key not in self._index:
            raise KeyError(f"unknown stream {stream!r} of camera {camera!r}; known: {self._inputs}")
        if arrival is not None:
            self.monitors[key].record(stamp, arrival)
        index = self._index[key]
        stamp_ns = _to_ns(stamp)
        newest = self._newest_ns[index]
        if newest is not None and newest - stamp_ns > _to_ns(self.max_clock_jump_back):
            self.clock_jumps += 1
            self._sync.reset()
            self._newest_ns = [None] * len(self._inputs)
        before = self._sync.out_of_order[index]
        self._sync.add(index, stamp, item)
        if self._sync.out_of_order[index] != before:
            return False
        self._newest_ns[index] = stamp_ns
        return True

    def queue_depth(self, camera: str, stream: str) -> int:
        return self._sync.queue_depths()[self._index[(camera, stream)]]

    def dropped(self, camera: str, stream: str) -> int:
        return self._sync.dropped()[self._index[(camera, stream)]]

    def out_of_order(self, camera: str, stream: str) -> int:
        return self._sync.out_of_order[self._index[(camera, stream)]]

    def statuses(self, now: float) -> list[Status]:
        """One diagnostics status per stream (rate, lateness, drops, queue depth) plus the sync's."""
        depths, dropped = self._sync.queue_depths(), self._sync.dropped()
        statuses = []
        for index, key in enumerate(self._inputs):
            monitor = self.monitors[key]
            monitor.set_drops(dropped[index])
            monitor.set_queue_depth(depths[index])
            statuses.append(monitor.status(now))
        values = {"sets": str(self.sets_emitted), "clock_jumps": str(self.clock_jumps),
                  "out_of_order": str(sum(self._sync.out_of_order))}
        if self.sets_emitted == 0:
            statuses.append(Status("camera_sync", Level.WARN, "no synchronised camera set yet", values))
        else:
            statuses.append(Status("camera_sync", Level.OK, f"{self.sets_emitted} sets", values))
        return statuses

    def _on_match(self, items: tuple, stamps: tuple) -> None:
        frames: dict[str, CameraFrame] = {}
        for (camera, stream), item, stamp in zip(self._inputs, items, stamps):
            frame = frames.setdefault(camera, CameraFrame(color=None, camera_info=None))
            setattr(frame, stream, item)
            frame.stamps[stream] = stamp
        self.sets_emitted += 1
        self.callback(CameraSet(stamp=max(stamps), frames=frames))


class StampedHistory:
    """The last `maxlen` stamped items of one stream (e.g. joint states), looked up by stamp.

    Why: proprioception streams faster than the cameras (100-1000 Hz against 15-30 Hz) and with
    less latency, so when a camera set completes, the newest joint state is usually *newer* than
    the images; the policy was trained on joints and images of the same instant, so the set gets
    the joint state nearest its stamp, not the newest one.
    """

    def __init__(self, maxlen: int) -> None:
        if not isinstance(maxlen, int) or maxlen < 1:
            raise ValueError(f"maxlen must be a positive integer, got {maxlen!r}")
        self._items: deque[_Stamped] = deque(maxlen=maxlen)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, stamp: float, item: Any) -> None:
        self._items.append(_Stamped(_to_ns(stamp), item))

    def nearest(self, stamp: float) -> Any:
        """The item stamped nearest `stamp`; the newest one among equally near (LookupError if empty)."""
        if not self._items:
            raise LookupError("no item yet")
        target = _to_ns(stamp)
        return min(reversed(self._items), key=lambda entry: abs(entry.stamp_ns - target)).item
