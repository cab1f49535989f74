"""DiagnosticsPublisher logs each change of a status's level (WARN/ERROR at that severity, back to
OK at info) and nothing while a level stays, whatever the message; every status still goes out on
/diagnostics."""
from __future__ import annotations

import rclpy

from vla3d_ros.ros.common import DiagnosticsPublisher
from vla3d_ros.runtime.diagnostics import Level, Status


class RecordingLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, message, **_):
        self.lines.append(("info", message))

    def warning(self, message, **_):
        self.lines.append(("warning", message))

    def error(self, message, **_):
        self.lines.append(("error", message))


def test_level_transitions_are_logged_once_at_their_severity(ros_context, monkeypatch):
    node = rclpy.create_node("diagnostics_log", context=ros_context)
    try:
        logger = RecordingLogger()
        monkeypatch.setattr(node, "get_logger", lambda: logger)
        diagnostics = DiagnosticsPublisher(node)
        sent = []
        monkeypatch.setattr(diagnostics.publisher, "publish", sent.append)
        sequence = [
            [Status("cam/color", Level.OK, "OK"), Status("inference", Level.STALE, "unconfigured")],
            [Status("cam/color", Level.ERROR, "silent for 0.60 s"), Status("inference", Level.STALE, "unconfigured")],
            [Status("cam/color", Level.ERROR, "silent for 0.70 s"), Status("inference", Level.OK, "active")],
            [Status("cam/color", Level.WARN, "late"), Status("inference", Level.OK, "active")],
            [Status("cam/color", Level.OK, "OK"), Status("inference", Level.OK, "active")],
        ]
        for statuses in sequence:
            diagnostics.publish(statuses)
        assert logger.lines == [
            ("info", "inference: unconfigured"),
            ("error", "cam/color: silent for 0.60 s"),
            ("info", "inference: active (was STALE)"),
            ("warning", "cam/color: late"),
            ("info", "cam/color: OK (was WARN)"),
        ]
        assert len(sent) == len(sequence)
        assert [s.name for s in sent[1].status] == ["diagnostics_log: cam/color", "diagnostics_log: inference"]
        assert sent[1].status[0].message == "silent for 0.60 s"
    finally:
        node.destroy_node()
