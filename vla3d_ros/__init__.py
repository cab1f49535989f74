"""vla3d_ros: a 3D-aware vision-language-action policy as a drop-in ROS 2 component.

The generated message package (`vla3d_ros.msg`) is installed by rosidl. In a colcon install it
sits in the same directory as these sources; in the development venv (`./run setup`) it lives
in a separate prefix, so this package's path is extended to every `vla3d_ros` directory on
sys.path.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
