"""ROS-free live-robot logic: everything the nodes decide, tested without ROS.

The image_pipeline pattern: these modules never import rclpy or any *_msgs package; the nodes in
`vla3d_ros.ros` only move messages in and out of them. Times are float seconds passed in
explicitly (no wall clock inside the logic), so tests script whole timelines.

Modules (data flows top to bottom):
- `config`         the runtime YAML schema as validated dataclasses (`load_runtime_config`).
- `synchronizer`   message_filters' ApproximateTime policy and the per-camera set assembler.
- `images`         color / depth image decoding (16UC1 mm, 32FC1 m) with unit mix-up detection.
- `calibration`    validated intrinsics (CameraInfo), extrinsics from config or a TransformSource.
- `policy_runner`  camera set -> `Observation` -> policy `infer` -> `ActionChunk`, errors caught.
- `policy_source`  where the policy comes from: a checkpoint, or a policy server (`vla3d_ros.remote`).
- `chunk_executor` chunk rows at the controller rate, temporal ensembling, expiry.
- `watchdog`       stale observation, command timeout, inference overrun.
- `safety`         arm/disarm, dry-run, e-stop latch, workspace / speed / joint-step limits,
                   and `SafeActionController`, the whole control step the action node runs.
- `diagnostics`    per-stream rate / drops / lateness and the OK/WARN/ERROR status model.
"""
