"""Diagnostics model: per-stream statistics and a plain OK/WARN/ERROR status.

`Status` mirrors diagnostic_msgs/DiagnosticStatus (level, name, message, key/values) without
depending on it; the node converts it. `StreamMonitor` keeps a rolling window of one stream's
arrivals (rate, lateness = arrival time - header stamp) plus cumulative drops and the current
queue depth, and turns them into a `Status` against an expected rate and a silence timeout.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Iterable


class Level(IntEnum):
    """Same values as diagnostic_msgs/DiagnosticStatus."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


@dataclass
class Status:
    name: str
    level: Level
    message: str
    values: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def worst(statuses: Iterable["Status"], name: str) -> "Status":
        """One summary status: the worst level; messages of every non-OK status joined."""
        statuses = list(statuses)
        if not statuses:
            return Status(name, Level.STALE, "no status reported yet")
        level = max(s.level for s in statuses)
        problems = [f"{s.name}: {s.message}" for s in statuses if s.level != Level.OK]
        return Status(name, Level(level), "; ".join(problems) if problems else "all OK")


@dataclass
class StreamStats:
    count: int               # messages inside the window
    rate_hz: float           # messages per second inside the window (0 if < 2 messages)
    lateness_mean: float     # s, mean(arrival - stamp) inside the window
    lateness_max: float
    age: float | None        # s since the newest message (its arrival, or its stamp if later); None = never
    total: int               # messages ever received
    drops: int               # messages ever dropped
    queue_depth: int


class StreamMonitor:
    """Rolling statistics of one input stream; all times are passed in (float seconds).

    Args:
        name: shown in diagnostics, e.g. "front/color".
        window: seconds of history used for rate and lateness.
        expected_rate: Hz; a rate below half of it is a WARN (None = no expectation).
        timeout: seconds of silence after which the stream is an ERROR.
        max_lateness: seconds; a mean lateness above it is a WARN.
        startup_grace: seconds from the first `status` call during which silence is not judged:
            a stream heard from is OK, one never heard from is STALE (not started yet).
    """

    def __init__(self, name: str, window: float = 5.0, expected_rate: float | None = None,
                 timeout: float = 1.0, max_lateness: float = 0.2, max_samples: int = 10_000,
                 startup_grace: float = 0.0) -> None:
        if not window > 0:
            raise ValueError(f"window must be > 0 s, got {window}")
        if not startup_grace >= 0:
            raise ValueError(f"startup_grace must be >= 0 s, got {startup_grace}")
        self.name = name
        self.window = window
        self.expected_rate = expected_rate
        self.timeout = timeout
        self.max_lateness = max_lateness
        self.startup_grace = startup_grace
        self._first_status: float | None = None   # time of the first judgement (start of the grace)
        # Bounded even if a flood of messages arrives within one window.
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)  # (arrival, lateness)
        self.total = 0
        self.drops = 0
        self.queue_depth = 0
        self._last_arrival: float | None = None
        self._last_heard: float | None = None      # when the newest message counts from (see `record`)

    def record(self, stamp: float, arrival: float) -> None:
        """One message with header `stamp` arrived at `arrival` (same clock, seconds).

        Silence counts from the later of the two: a simulator or bag player publishes a step
        before it advances /clock (and jumps the clock between episodes), so on the node's clock
        its messages arrive before their own stamp, and are current until then. (A camera whose
        clock runs ahead is caught by the stale-observation watchdog, which refuses future stamps.)
        """
        self.total += 1
        if self._last_arrival is not None and arrival < self._last_arrival:
            self._samples.clear()  # clock jumped back (bag loop): old window is meaningless
        self._last_arrival = arrival
        self._last_heard = max(arrival, stamp)
        self._samples.append((arrival, arrival - stamp))

    def record_drops(self, count: int = 1) -> None:
        self.drops += count

    def set_drops(self, total: int) -> None:
        """Set the cumulative drop count (when the owner of the queue counts them)."""
        self.drops = total

    def set_queue_depth(self, depth: int) -> None:
        self.queue_depth = depth

    def stats(self, now: float) -> StreamStats:
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()
        arrivals = [a for a, _ in self._samples]
        lateness = [late for _, late in self._samples]
        rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) >= 2 and arrivals[-1] > arrivals[0] else 0.0
        return StreamStats(
            count=len(arrivals),
            rate_hz=rate,
            lateness_mean=sum(lateness) / len(lateness) if lateness else 0.0,
            lateness_max=max(lateness) if lateness else 0.0,
            age=None if self._last_heard is None else now - self._last_heard,
            total=self.total,
            drops=self.drops,
            queue_depth=self.queue_depth,
        )

    def starting(self, now: float) -> bool:
        """True inside the start-up grace (counted from the first `status` call; before it too)."""
        return self.startup_grace > 0 and (self._first_status is None or now - self._first_status < self.startup_grace)

    def status(self, now: float) -> Status:
        stats = self.stats(now)
        values = {
            "rate_hz": f"{stats.rate_hz:.2f}",
            "lateness_mean_s": f"{stats.lateness_mean:.4f}",
            "lateness_max_s": f"{stats.lateness_max:.4f}",
            "received": str(stats.total),
            "dropped": str(stats.drops),
            "queue_depth": str(stats.queue_depth),
            "age_s": "never" if stats.age is None else f"{stats.age:.3f}",
        }
        if self._first_status is None:
            self._first_status = now
        starting = self.starting(now)
        if stats.age is None:
            if starting:
                return Status(self.name, Level.STALE, f"no message yet (start-up grace {self.startup_grace} s)", values)
            return Status(self.name, Level.ERROR, "no message received", values)
        if stats.age > self.timeout and not starting:
            return Status(self.name, Level.ERROR, f"silent for {stats.age:.2f} s (timeout {self.timeout} s)", values)
        if self.expected_rate is not None and stats.count >= 2 and stats.rate_hz < 0.5 * self.expected_rate:
            return Status(self.name, Level.WARN,
                          f"rate {stats.rate_hz:.1f} Hz is below half the expected {self.expected_rate} Hz", values)
        if stats.lateness_mean > self.max_lateness:
            return Status(self.name, Level.WARN,
                          f"messages arrive {stats.lateness_mean:.3f} s after their stamp on average", values)
        return Status(self.name, Level.OK, "OK", values)


class EventLog:
    """The last few distinct fault messages per component, for /diagnostics and the log.

    Faults that hold the arm must be visible even after the condition clears; a bounded log
    keeps the most recent `capacity` of them with their time.
    """

    def __init__(self, capacity: int = 20) -> None:
        self._events: deque[tuple[float, Level, str]] = deque(maxlen=capacity)
        self.total = 0

    def report(self, now: float, level: Level, message: str) -> bool:
        """Record an event; returns True if it differs from the previous one (i.e. worth logging)."""
        self.total += 1
        is_new = not self._events or self._events[-1][2] != message
        if is_new:
            self._events.append((now, level, message))
        return is_new

    def recent(self) -> list[tuple[float, Level, str]]:
        return list(self._events)
