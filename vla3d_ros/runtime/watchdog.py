"""Watchdogs: stale observation, command timeout, inference overrun.

Each answers "may the arm move on this input right now?" with a `WatchdogResult` carrying the
reason, so the safety filter can hold and say why. They follow MoveIt Servo's and ros2_control's
conventions: Servo halts when no command arrived for `incoming_command_timeout` (0.1 s by
default); joint_trajectory_controller drops trajectories whose stamp is already in the past.
A clock that jumps backwards (a looping bag, a restarted simulator) makes every previous stamp
lie "in the future"; that is treated as stale too, never as fresh.
"""
from __future__ import annotations

from dataclasses import dataclass

# Stamps up to this far ahead of `now` are accepted (clock skew between machines, rounding).
FUTURE_TOLERANCE = 0.05


@dataclass(frozen=True)
class WatchdogResult:
    ok: bool
    reason: str
    age: float | None = None   # seconds, None = nothing received


class _AgeWatchdog:
    """Shared logic: the age of the last event against a timeout."""

    what = "event"

    def __init__(self, timeout: float) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 s, got {timeout}")
        self.timeout = timeout
        self._last: float | None = None
        self.trips = 0
        self._tripped = False

    def reset(self) -> None:
        self._last = None
        self._tripped = False

    def _update(self, stamp: float) -> None:
        self._last = stamp

    def check(self, now: float) -> WatchdogResult:
        result = self._evaluate(now)
        if not result.ok and not self._tripped:
            self.trips += 1  # count transitions into the tripped state, not control ticks
        self._tripped = not result.ok
        return result

    def _evaluate(self, now: float) -> WatchdogResult:
        if self._last is None:
            return WatchdogResult(False, f"no {self.what} yet")
        age = now - self._last
        if age < -FUTURE_TOLERANCE:
            return WatchdogResult(False, f"{self.what} stamped {-age:.3f} s in the future (clock jumped back?)", age)
        if age > self.timeout:
            return WatchdogResult(False, f"{self.what} is {age:.3f} s old (limit {self.timeout} s)", age)
        return WatchdogResult(True, "ok", age)


class StaleObservationWatchdog(_AgeWatchdog):
    """Holds when the observation behind the executed action is older than `timeout`."""

    what = "observation"

    def observe(self, stamp: float) -> None:
        """The newest observation used for inference has header stamp `stamp`."""
        self._update(stamp)


class CommandTimeoutWatchdog(_AgeWatchdog):
    """Holds when no fresh command (chunk row) arrived for `timeout` seconds."""

    what = "command"

    def feed(self, now: float) -> None:
        self._update(now)


class InferenceOverrunMonitor:
    """Counts inference calls slower than the configured period (they delay the next chunk).

    An overrun does not hold the arm by itself (the previous chunk keeps being executed and the
    stale-observation watchdog bounds how long); it is reported so the rate can be lowered.
    """

    def __init__(self, period: float) -> None:
        if not period > 0:
            raise ValueError(f"period must be > 0 s, got {period}")
        self.period = period
        self.calls = 0
        self.overruns = 0
        self.last_latency: float | None = None
        self.max_latency = 0.0

    def record(self, latency: float) -> bool:
        """Record one inference latency (seconds); returns True if it overran the period."""
        self.calls += 1
        self.last_latency = latency
        self.max_latency = max(self.max_latency, latency)
        overran = latency > self.period
        self.overruns += int(overran)
        return overran

    def result(self) -> WatchdogResult:
        if self.last_latency is not None and self.last_latency > self.period:
            return WatchdogResult(False, f"inference took {self.last_latency:.3f} s > period {self.period:.3f} s "
                                         f"({self.overruns}/{self.calls} overruns)", self.last_latency)
        return WatchdogResult(True, f"{self.overruns}/{self.calls} overruns", self.last_latency)
