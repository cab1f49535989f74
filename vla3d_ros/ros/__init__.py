"""The ROS 2 layer: the only rclpy code besides the applications (`vla3d_ros.apps`). `conversions`
turns messages into arrays and back; one thin node per role moves them in and out of
`vla3d_ros.runtime`; `graph` builds the node graph; `tf`, `qos`, `topics` are its plumbing."""
