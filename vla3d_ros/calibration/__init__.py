"""Camera calibration tools (ROS-free): ChArUco board, intrinsics, hand-eye extrinsics, health.

- `board`: the ChArUco board (definition, printable / texture image, detection, pose);
- `intrinsics`: K and distortion from board views -> a camera_info YAML (camera_calibration_parsers);
- `handeye`: T_base_cam (eye-to-hand) or T_ee_cam (eye-in-hand) from board poses + end-effector
  poses -> the runtime YAML's `extrinsics` block and a static-transform snippet;
- `health`: cross-view consistency of the cameras' depth against the current extrinsics (the live
  monitor that notices a moved camera), combined with
- `arm_check`: each camera's depth registered onto the arm's surface placed by the joint states;
- `registration`: the damped point-to-plane ICP both share.

OpenCV's aruco and calib3d modules (opencv-contrib-python-headless) do the detection and the
closed-form solves; this package adds the checks, residuals, refinement and file formats.
"""
