"""Topic names of the graph's own links (the robot-facing topics come from the runtime config).

The proprioception and policy-output names match what `vla3d convert` writes into bags
(`vla3d_ros.data.bags`), so a recorded bag and the live graph speak the same topics.
"""
from __future__ import annotations

ACTION_CHUNK = "/vla3d/action_chunk"            # vla3d_ros/ActionChunk, policy -> action node
INSTANCES = "/vla3d/instances"                  # vla3d_ros/Instance3DArray
COMPLETED_POINTS = "/vla3d/completed_points"    # sensor_msgs/PointCloud2, base frame
INFERENCE_TIMING = "/vla3d/inference_timing"    # diagnostic_msgs/DiagnosticArray, ms per module
MARKERS = "/vla3d/markers"                      # visualization_msgs/MarkerArray
GRIPPER_OPENING = "/vla3d/gripper_opening"      # std_msgs/Float64, measured opening in [0, 1]
DRY_RUN_COMMANDS = "/vla3d/dry_run/twist"       # what the action node would send, in dry-run
DRY_RUN_TRAJECTORY = "/vla3d/dry_run/joint_trajectory"
DIAGNOSTICS = "/diagnostics"
CLOCK = "/clock"
