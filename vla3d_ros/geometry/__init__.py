"""Camera geometry in numpy: intrinsics, extrinsics, (un)projection, rigid transforms.

OpenCV convention throughout (x right, y down, z forward); `T_base_cam` maps camera points to
the robot base frame. The torch twins used inside the model live in `vla3d_ros.model.geometry_ops`.
"""
from vla3d_ros.geometry.cameras import (
    displace_camera,
    intrinsics_from_fovy,
    invert_transform,
    project_points,
    transform_points,
    unproject_depth,
    unproject_pixels,
    validate_intrinsics,
)
from vla3d_ros.geometry.rotations import (
    euler_xyz_to_matrix,
    matrix_to_euler_xyz,
    matrix_to_quaternion_xyzw,
    quaternion_xyzw_to_matrix,
)

__all__ = [
    "displace_camera",
    "euler_xyz_to_matrix",
    "intrinsics_from_fovy",
    "invert_transform",
    "matrix_to_euler_xyz",
    "matrix_to_quaternion_xyzw",
    "project_points",
    "quaternion_xyzw_to_matrix",
    "transform_points",
    "unproject_depth",
    "unproject_pixels",
    "validate_intrinsics",
]
