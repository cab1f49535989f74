"""`vla3d bringup`: the in-process node graph; it lives in `vla3d_ros.ros.bringup` (rclpy)."""
from vla3d_ros.ros.bringup import HELP, add_arguments, run

__all__ = ["HELP", "add_arguments", "run"]
