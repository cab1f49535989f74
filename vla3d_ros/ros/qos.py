"""QoS profiles of the graph (REP 2003 conventions); every node picks one of these three.

- `SENSOR_QOS` for camera inputs: best effort, keep last 5. A late frame is worth less than the
  next one, and a best-effort subscriber also matches reliable publishers (bag players, drivers).
- `RELIABLE_QOS` for commands to the arm, action chunks, policy outputs, /diagnostics and /clock:
  a command is never silently lost and a recorder sees every output; keep last 10 so a slow
  reader does not block the writer. (rclpy's TimeSource subscribes to /clock best effort, which a
  reliable publisher matches.)
- `LATCHED_QOS` for state that late joiners need (the instruction, static transforms):
  reliable + transient local, keep last 1.
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

SENSOR_QOS = qos_profile_sensor_data

RELIABLE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)

LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
