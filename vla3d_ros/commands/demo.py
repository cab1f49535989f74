"""`vla3d demo`: the sim + ROS 2 graph + checkpoint run; it lives in `vla3d_ros.ros.demo` (rclpy)."""
from vla3d_ros.ros.demo import HELP, add_arguments, run

__all__ = ["HELP", "add_arguments", "run"]
