"""Watchdogs and the diagnostics model on scripted timelines."""
from __future__ import annotations

import pytest

from vla3d_ros.runtime.diagnostics import EventLog, Level, Status, StreamMonitor
from vla3d_ros.runtime.watchdog import CommandTimeoutWatchdog, InferenceOverrunMonitor, StaleObservationWatchdog


def test_stale_observation_watchdog_timeline():
    watchdog = StaleObservationWatchdog(timeout=0.5)
    assert not watchdog.check(0.0).ok and "no observation yet" in watchdog.check(0.0).reason
    watchdog.observe(1.0)
    assert watchdog.check(1.4).ok and watchdog.check(1.4).age == pytest.approx(0.4)
    result = watchdog.check(1.6)
    assert not result.ok and "0.600 s old" in result.reason
    watchdog.observe(1.7)
    assert watchdog.check(1.7).ok
    assert not watchdog.check(0.5).ok and "future" in watchdog.check(0.5).reason  # clock jumped back
    assert watchdog.trips == 3  # never-received, too old, future: counted once per transition


def test_command_timeout_is_servo_like():
    watchdog = CommandTimeoutWatchdog(timeout=0.1)
    watchdog.feed(2.0)
    assert watchdog.check(2.099).ok and not watchdog.check(2.101).ok


def test_inference_overrun_monitor():
    monitor = InferenceOverrunMonitor(period=0.2)
    assert not monitor.record(0.15) and monitor.result().ok
    assert monitor.record(0.35)
    result = monitor.result()
    assert not result.ok and "0.350 s > period 0.200 s" in result.reason and "1/2 overruns" in result.reason
    assert monitor.max_latency == 0.35


def test_stream_monitor_rate_lateness_and_silence():
    monitor = StreamMonitor("front/color", window=2.0, expected_rate=30.0, timeout=0.5)
    assert monitor.status(0.0).level == Level.ERROR  # never received
    for k in range(61):  # 30 Hz for 2 s, each message arriving 10 ms after its stamp
        monitor.record(stamp=k / 30, arrival=k / 30 + 0.01)
    stats = monitor.stats(2.02)
    assert stats.rate_hz == pytest.approx(30.0, rel=1e-6) and stats.lateness_mean == pytest.approx(0.01)
    monitor.record_drops(3)
    monitor.set_queue_depth(2)
    status = monitor.status(2.02)
    assert status.level == Level.OK and status.values["dropped"] == "3" and status.values["queue_depth"] == "2"
    silent = monitor.status(3.0)
    assert silent.level == Level.ERROR and "silent for" in silent.message


def test_stream_monitor_does_not_judge_silence_during_the_startup_grace():
    """Camera drivers start after the graph: no message yet is STALE, not an error, for a while."""
    late = StreamMonitor("front/color", timeout=2.0, startup_grace=5.0)
    never = StreamMonitor("side/color", timeout=2.0, startup_grace=5.0)
    assert late.status(1.0).level == Level.STALE and "start-up grace" in late.status(1.0).message
    late.record(stamp=1.5, arrival=1.5)
    assert late.status(4.0).level == Level.OK               # 2.5 s silent, but inside the grace
    for k in range(40, 80):                                   # 10 Hz from then on
        late.record(stamp=k / 10, arrival=k / 10)
    assert late.status(8.0).level == Level.OK
    # After the grace (counted from the first check), silence and absence are errors again.
    assert late.status(10.5).level == Level.ERROR and "silent for 2.60 s" in late.status(10.5).message
    assert never.starting(0.0)                                # before the first check: starting
    never.status(1.0)
    assert never.starting(5.9) and not never.starting(6.0)    # other judgements (calibration, sync) follow it
    assert never.status(6.5).level == Level.ERROR and never.status(6.5).message == "no message received"
    assert not StreamMonitor("wrist/color", timeout=2.0).starting(0.0)
    assert StreamMonitor("wrist/color", timeout=2.0).status(0.0).level == Level.ERROR   # no grace by default
    with pytest.raises(ValueError, match="startup_grace must be >= 0 s, got -1"):
        StreamMonitor("wrist/color", startup_grace=-1)


def test_stream_monitor_counts_silence_from_a_stamp_later_than_the_arrival():
    """The lockstep player publishes a step before it advances /clock and jumps the clock 3 s
    between episodes: the new episode's messages arrive at the old time, stamped at the new one.
    At the jump the stream is current, not 'silent for 3.00 s' (`./run demo`'s nine errors)."""
    monitor = StreamMonitor("front/color", timeout=2.0)
    for k in range(10, 30):                                   # episode 1: stamp t arrives at t - 0.1
        monitor.record(stamp=k / 10, arrival=(k - 1) / 10)
    monitor.record(stamp=2.9 + 3.0, arrival=2.8)              # episode 2's first step
    status = monitor.status(5.9)
    assert status.level == Level.OK, status
    assert monitor.status(8.0).level == Level.ERROR           # then silent for real: 2.1 s past its stamp


def test_stream_monitor_warns_on_low_rate_and_lateness():
    slow = StreamMonitor("side/depth", window=5.0, expected_rate=30.0, timeout=1.0)
    for k in range(10):
        slow.record(k / 10, k / 10)
    assert slow.status(0.95).level == Level.WARN and "below half" in slow.status(0.95).message
    late = StreamMonitor("wrist/color", window=5.0, timeout=1.0, max_lateness=0.1)
    for k in range(10):
        late.record(k / 10, k / 10 + 0.3)
    assert late.status(1.2).level == Level.WARN and "after their stamp" in late.status(1.2).message


def test_stream_monitor_memory_is_bounded_under_a_flood():
    monitor = StreamMonitor("flood", window=100.0, max_samples=50)
    for k in range(1000):
        monitor.record(k * 1e-4, k * 1e-4)
    assert monitor.stats(0.1).count == 50 and monitor.total == 1000


def test_status_worst_and_event_log():
    summary = Status.worst([Status("a", Level.OK, "OK"), Status("b", Level.ERROR, "broken"),
                            Status("c", Level.WARN, "slow")], "all")
    assert summary.level == Level.ERROR and summary.message == "b: broken; c: slow"
    assert Status.worst([], "none").level == Level.STALE
    log = EventLog(capacity=2)
    assert log.report(0.0, Level.ERROR, "x") and not log.report(0.1, Level.ERROR, "x")
    log.report(0.2, Level.WARN, "y")
    log.report(0.3, Level.WARN, "z")
    assert [m for _, _, m in log.recent()] == ["y", "z"] and log.total == 4
