"""Applications built on the ROS 2 graph: `vla3d demo`, `vla3d soak`, `vla3d replay`, `vla3d bringup`
and the bench's DDS harness. Each composes the nodes of `vla3d_ros.ros` (graph, player, recorders)
into a run with a report; `vla3d_ros.commands` parses their arguments. Nothing below imports them
(`test/test_ros_foundation_boundaries.py`)."""
