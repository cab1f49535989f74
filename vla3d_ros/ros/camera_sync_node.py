"""camera_sync_node: configured cameras (color + CameraInfo [+ depth]) -> the newest synchronised set.

Wiring only; the logic lives in `vla3d_ros.runtime`:
- approximate-time sync: message_filters when installed, else `runtime.synchronizer`
  (same ApproximateTime semantics, slop and bounded queues from `config.sync`);
- calibration: `runtime.calibration.CalibrationStore` (intrinsics from CameraInfo, extrinsics from
  the config or from TF through a TransformSource, see `ros/tf.py`);
- the observation: `runtime.policy_runner.ObservationBuilder`, built lazily by `observation()` so
  images are only decoded for the sets the policy actually uses (cameras at 30 Hz, policy at 5 Hz);
- per-stream rate / drops / lateness / queue depth: `runtime.diagnostics.StreamMonitor`, on
  /diagnostics at `rates.diagnostics_hz`;
- calibration health (`config.calibration_monitor.enabled`): `calibration.health` checks the newest
  set's depth across cameras at `check_hz` on a worker thread (a check takes longer than a camera
  period); its status `calibration_health` is on /diagnostics and, with `hold_on_miscalibration`,
  `observation()` refuses (the arm holds) while a camera is WARN. With `calibration_monitor.urdf`,
  each check also registers the cameras onto the arm (`calibration.arm_check`: the URDF's collision
  primitives placed by TF's link poses at the set's stamp).

Proprioception comes with the set: the JointState stamped nearest the set's stamp
(`runtime.synchronizer.StampedHistory`), the latest gripper opening (`topics.GRIPPER_OPENING`, an
unstamped Float64) and the end-effector pose (TF `base_frame <- ee_frame` at the set's stamp).
The inference node lives in the same process and calls `observation()`; `add_listener` lets it run
on every new set instead of on a timer (lockstep simulation and bag replay).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64

from vla3d_ros.ros import conversions
from vla3d_ros.ros import topics
from vla3d_ros.ros.common import DiagnosticsPublisher, node_parameters, now_seconds
from vla3d_ros.calibration.arm_check import ArmSurface, link_poses
from vla3d_ros.calibration.health import CalibrationHealthMonitor, DepthView
from vla3d_ros.ros.qos import SENSOR_QOS
from vla3d_ros.runtime.calibration import CalibrationMissing, CalibrationStore, TransformSource
from vla3d_ros.runtime.config import RuntimeConfig
from vla3d_ros.runtime.diagnostics import Level, Status, StreamMonitor
from vla3d_ros.runtime.policy_runner import CameraImages, JointPositions, ObservationBuilder
from vla3d_ros.runtime.synchronizer import CameraFrame, CameraSet, CameraSetAssembler, StampedHistory
from vla3d_ros.types import Observation

try:  # a full ROS 2 install
    import message_filters
    HAVE_MESSAGE_FILTERS = True
except ImportError:
    HAVE_MESSAGE_FILTERS = False

_STREAM_TYPES = {"color": Image, "camera_info": CameraInfo, "depth": Image}
# Below this share of valid (finite, > 0) pixels a depth map is reported: almost nothing usable.
MIN_VALID_DEPTH_SHARE = 0.05
JOINT_STATE_HISTORY = 500   # joint states kept for stamp matching: 0.5 s at 1 kHz


class CameraSyncNode(Node):
    """Keeps the newest synchronised camera set and builds `Observation`s from it.

    Args:
        config: the runtime config (cameras, sync, rates, watchdog, frames).
        transforms: where extrinsics of cameras without config extrinsics and the EE pose come
            from (`ros.tf.make_transform_source`); None = config extrinsics only, no EE pose.
    """

    def __init__(self, config: RuntimeConfig, *, transforms: TransformSource | None = None,
                 use_sim_time: bool = False, context=None, name: str = "vla3d_camera_sync",
                 use_message_filters: bool = HAVE_MESSAGE_FILTERS) -> None:
        super().__init__(name, context=context, parameter_overrides=node_parameters(use_sim_time))
        self.config = config
        self.transforms = transforms
        self.calibration = CalibrationStore.from_config(config)
        self.builder = ObservationBuilder(config.camera_names, self.calibration, config.joint_names,
                                          config.max_instruction_chars)
        self._lock = threading.Lock()
        self._latest: CameraSet | None = None
        self._joint_states = StampedHistory(JOINT_STATE_HISTORY)
        self._gripper: float | None = None
        self._listeners: list[Callable[[float], None]] = []
        cameras = [(camera.name, camera.has_depth) for camera in config.cameras]
        self.assembler = CameraSetAssembler(cameras, config.sync.queue_size, config.sync.slop, self._on_set,
                                            config.sync.max_clock_jump_back)
        self.sets_received = 0
        self._camera_info_errors: dict[str, str] = {}
        self._valid_depth: dict[str, float] = {}   # camera -> share of valid pixels in its last decoded depth
        streams = self.assembler.inputs
        # Camera rates are not part of the config: a stream is judged by silence and lateness.
        self.monitors = {(camera_name, stream): StreamMonitor(
            f"{camera_name}/{stream}", timeout=config.watchdog.camera_timeout,
            startup_grace=config.watchdog.camera_startup_grace) for camera_name, stream in streams}
        # Sensor callbacks in their own group: under a MultiThreadedExecutor they never wait
        # behind the diagnostics timer (and the inference node's forward pass has its own group).
        self.sensor_group = MutuallyExclusiveCallbackGroup()
        # Proprioception subscribes first: an executor serves the messages of one wait in
        # subscription order, so a joint state and gripper opening published before the images of
        # the same instant (as the lockstep simulator does) are stored before that set completes
        # and its listeners read it, instead of one step late.
        self.create_subscription(Float64, topics.GRIPPER_OPENING, self._on_gripper, SENSOR_QOS,
                                 callback_group=self.sensor_group)
        self.create_subscription(JointState, config.joint_state_topic, self._on_joint_state, SENSOR_QOS,
                                 callback_group=self.sensor_group)
        self._filters = None
        if use_message_filters:
            self._filters = [message_filters.Subscriber(self, _STREAM_TYPES[stream], self._topic(c, stream),
                                                        qos_profile=SENSOR_QOS, callback_group=self.sensor_group)
                             for c, stream in streams]
            for (camera_name, stream), subscriber in zip(streams, self._filters):
                subscriber.registerCallback(self._monitor_callback(camera_name, stream))
            self._message_filters_sync = message_filters.ApproximateTimeSynchronizer(
                self._filters, config.sync.queue_size, config.sync.slop)
            self._message_filters_sync.registerCallback(self._on_message_filters_set)
        else:
            for camera_name, stream in streams:
                self.create_subscription(_STREAM_TYPES[stream], self._topic(camera_name, stream),
                                         self._stream_callback(camera_name, stream), SENSOR_QOS,
                                         callback_group=self.sensor_group)
        self.diagnostics = DiagnosticsPublisher(self)
        self.create_timer(1.0 / config.rates.diagnostics_hz, self.publish_diagnostics)
        self.health: CalibrationHealthMonitor | None = None
        self._health_status: Status | None = None
        self._health_hold = ""          # why observations are refused ("" = they are not)
        self._health_thread: threading.Thread | None = None
        self._arm_surface: ArmSurface | None = None
        if config.calibration_monitor.enabled:
            self.health = CalibrationHealthMonitor(config.calibration_monitor)
            if config.calibration_monitor.arm_check and config.calibration_monitor.urdf:
                try:
                    urdf = Path(config.calibration_monitor.urdf).read_text()
                except OSError as error:
                    raise ValueError(f"calibration_monitor.urdf: cannot read {config.calibration_monitor.urdf!r}: "
                                     f"{error.strerror}") from None
                self._arm_surface, meshes = ArmSurface.from_urdf(urdf, config.calibration_monitor.arm_spacing)
                if meshes:
                    self.get_logger().warning(f"arm check: mesh collisions left out (no mesh loader): links {meshes}")
            self.create_timer(1.0 / config.calibration_monitor.check_hz, self._start_health_check,
                              callback_group=MutuallyExclusiveCallbackGroup())

    # ---- inputs -----------------------------------------------------------------------------

    def _topic(self, camera_name: str, stream: str) -> str:
        return getattr(self.config.camera(camera_name).topics, stream)

    def _monitor_callback(self, camera_name: str, stream: str):
        """Per-message bookkeeping before sync: statistics, and CameraInfo validated on arrival."""
        monitor = self.monitors[(camera_name, stream)]

        def record(msg) -> None:
            monitor.record(conversions.time_to_seconds(msg.header.stamp), now_seconds(self))
            if stream == "camera_info":
                self._update_camera_info(camera_name, msg)
        return record

    def _update_camera_info(self, camera_name: str, msg: CameraInfo) -> None:
        try:
            self.calibration.update_camera_info(camera_name, msg.k, msg.width, msg.height, msg.d,
                                                msg.distortion_model)
            self._camera_info_errors.pop(camera_name, None)
        except ValueError as error:
            # The store keeps the previous valid calibration; say so once per distinct error.
            if self._camera_info_errors.get(camera_name) != str(error):
                self.get_logger().error(f"camera {camera_name!r}: invalid CameraInfo: {error}")
            self._camera_info_errors[camera_name] = str(error)

    def _stream_callback(self, camera_name: str, stream: str):
        record = self._monitor_callback(camera_name, stream)

        def on_message(msg) -> None:
            record(msg)
            with self._lock:
                before = self.sets_received
                accepted = self.assembler.add(camera_name, stream, conversions.time_to_seconds(msg.header.stamp), msg)
                new_set = self.sets_received != before
            if new_set:
                self._notify()
            if not accepted:
                self.get_logger().warning(f"{camera_name}/{stream}: out-of-order stamp "
                                          f"{conversions.time_to_seconds(msg.header.stamp):.3f} dropped",
                                          throttle_duration_sec=5.0)
        return on_message

    def _on_message_filters_set(self, *msgs) -> None:
        frames: dict[str, CameraFrame] = {}
        stamps = []
        for (camera_name, stream), msg in zip(self.assembler.inputs, msgs):
            frame = frames.setdefault(camera_name, CameraFrame(color=None, camera_info=None))
            stamp = conversions.time_to_seconds(msg.header.stamp)
            setattr(frame, stream, msg)
            frame.stamps[stream] = stamp
            stamps.append(stamp)
        with self._lock:
            self._on_set(CameraSet(stamp=max(stamps), frames=frames))
        self._notify()

    def _on_set(self, camera_set: CameraSet) -> None:  # called with self._lock held
        self._latest = camera_set
        self.sets_received += 1

    def _notify(self) -> None:
        """Tell listeners about the newest set, outside the lock (they call `observation()`)."""
        stamp = self.latest_stamp
        if stamp is None:
            return
        for listener in list(self._listeners):
            listener(stamp)

    def _on_joint_state(self, msg: JointState) -> None:
        with self._lock:
            first = not len(self._joint_states)
            self._joint_states.add(conversions.time_to_seconds(msg.header.stamp), msg)
        if first:
            self._notify()  # a set that arrived before any proprioception can be used now

    def _on_gripper(self, msg: Float64) -> None:
        with self._lock:
            first = self._gripper is None
            self._gripper = float(msg.data)
        if first:
            self._notify()

    # ---- outputs ----------------------------------------------------------------------------

    def add_listener(self, listener: Callable[[float], None]) -> None:
        """Call `listener(stamp)` for every new synchronised set (from the subscription thread)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[float], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    @property
    def latest_stamp(self) -> float | None:
        with self._lock:
            return None if self._latest is None else self._latest.stamp

    def observation(self, instruction: str) -> Observation:
        """Observation of the newest synchronised set.

        Raises LookupError (no set / joint state / gripper / EE pose yet), CalibrationMissing or
        ValueError (bad image, encoding, CameraInfo, sizes) saying which camera and value.
        """
        with self._lock:
            camera_set, gripper = self._latest, self._gripper
            joint_msg = self._joint_states.nearest(camera_set.stamp) \
                if camera_set is not None and len(self._joint_states) else None
        if camera_set is None:
            raise LookupError("no synchronised camera set yet")
        if self._health_hold:
            raise CalibrationMissing(f"holding (calibration_monitor.hold_on_miscalibration): {self._health_hold}")
        if joint_msg is None:
            raise LookupError(f"no joint state on {self.config.joint_state_topic} yet")
        if gripper is None:
            raise LookupError(f"no gripper opening on {topics.GRIPPER_OPENING} yet")
        # The store kept the previous valid K, but a camera whose driver now sends a broken
        # CameraInfo may have been reconfigured (resolution, zoom): its images cannot be trusted.
        camera_info_errors = {name: error for name, error in dict(self._camera_info_errors).items()
                              if name in camera_set.frames}
        if camera_info_errors:
            raise ValueError("; ".join(f"camera {name!r}: invalid CameraInfo: {error}"
                                       for name, error in camera_info_errors.items()))
        images = {name: self._decode(name, frame) for name, frame in camera_set.frames.items()}
        self._refresh_extrinsics(camera_set.stamp)
        names, positions = conversions.joint_state_to_arrays(joint_msg)
        return self.builder.build(images, camera_set.stamp,
                                  JointPositions(names, positions, conversions.time_to_seconds(joint_msg.header.stamp)),
                                  self.ee_pose(camera_set.stamp), gripper, instruction)

    def ee_pose(self, stamp: float | None) -> np.ndarray:
        """(7,) end-effector pose in the base frame at `stamp` (None = latest); LookupError if unknown."""
        if self.transforms is None or not self.config.ee_frame:
            raise LookupError("no end-effector pose source: set ee_frame and provide transforms (TF)")
        return conversions.matrix_to_pose(self.transforms.lookup_transform(self.config.base_frame, self.config.ee_frame,
                                                                   stamp))

    def _decode(self, camera_name: str, frame: CameraFrame) -> CameraImages:
        try:
            rgb = conversions.image_to_rgb(frame.color)
            depth = None
            if frame.depth is not None:
                decoded = conversions.image_to_depth(frame.depth, self.config.camera(camera_name).depth_encoding)
                if decoded.unit_warning:
                    self.get_logger().warning(f"camera {camera_name!r}: {decoded.unit_warning}",
                                              throttle_duration_sec=10.0)
                depth = decoded.metres
                self._valid_depth[camera_name] = decoded.valid_fraction
        except ValueError as error:
            raise ValueError(f"camera {camera_name!r}: {error}") from None
        return CameraImages(rgb=rgb, depth=depth)

    def _refresh_extrinsics(self, stamp: float) -> None:
        from_tf = [camera.name for camera in self.config.cameras if camera.extrinsics is None]
        if from_tf and self.transforms is not None:
            self.calibration.refresh_extrinsics(self.transforms, stamp, from_tf)

    # ---- calibration health -----------------------------------------------------------------

    def _start_health_check(self) -> None:
        """Hand the newest set to a worker thread unless the previous check is still running."""
        if self._health_thread is not None and self._health_thread.is_alive():
            return
        with self._lock:
            camera_set = self._latest
        if camera_set is None:
            return
        self._health_thread = threading.Thread(target=self._run_health_check, args=(camera_set,),
                                               name="vla3d_calibration_health", daemon=True)
        self._health_thread.start()

    def _run_health_check(self, camera_set: CameraSet) -> None:
        views = {}
        try:
            self._refresh_extrinsics(camera_set.stamp)
            for name, frame in camera_set.frames.items():
                if frame.depth is not None and not self.calibration.missing().get(name):
                    depth = self._decode(name, frame).depth
                    views[name] = DepthView(depth, self.calibration.intrinsics(name).K,
                                            self.calibration.T_base_cam(name))
        except (LookupError, ValueError) as error:   # reported by the calibration/depth statuses
            self.get_logger().warning(f"calibration health check skipped: {error}", throttle_duration_sec=10.0)
            return
        arm = None
        if self._arm_surface is not None and self.transforms is not None:
            try:
                arm = self._arm_surface.posed(link_poses(self.transforms, self.config.base_frame,
                                                         self._arm_surface.links, camera_set.stamp))
            except (LookupError, ValueError) as error:   # the cross-view check still runs
                self.get_logger().warning(f"arm check skipped: {error}", throttle_duration_sec=10.0)
        self.health.check(camera_set.stamp, views, arm)
        hold = self.health.describe() if self.config.calibration_monitor.hold_on_miscalibration else ""
        with self._lock:
            self._health_status, self._health_hold = self.health.status(), hold

    def destroy_node(self) -> None:
        if self._health_thread is not None:
            self._health_thread.join()
        super().destroy_node()

    def statuses(self) -> list[Status]:
        now = now_seconds(self)
        with self._lock:
            sets, jumps = self.sets_received, self.assembler.clock_jumps
            for (camera_name, stream), monitor in self.monitors.items():
                if self._filters is None:
                    monitor.set_drops(self.assembler.dropped(camera_name, stream))
                    monitor.set_queue_depth(self.assembler.queue_depth(camera_name, stream))
                else:  # message_filters keeps no counters: unmatched = received - matched
                    monitor.set_drops(max(0, monitor.total - sets))
            latest = None if self._latest is None else self._latest.stamp
        statuses = [monitor.status(now) for monitor in self.monitors.values()]
        if latest is not None:
            self._refresh_extrinsics(latest)
        problems = dict(self.calibration.missing())
        for camera_name, error in self._camera_info_errors.items():
            problems[camera_name] = f"invalid CameraInfo: {error}"
        # while the streams are in their start-up grace, what has not arrived yet is not an error
        starting = any(monitor.starting(now) for monitor in self.monitors.values())
        statuses.append(Status("calibration", (Level.STALE if starting else Level.ERROR) if problems else Level.OK,
                               "; ".join(f"{c}: {why}" for c, why in problems.items()) if problems else "OK"))
        statuses.append(self._depth_status())
        if self.health is not None:
            with self._lock:
                health = self._health_status
            statuses.append(health or Status("calibration_health", Level.STALE, "no check yet"))
        statuses.append(Status("sync", Level.OK if sets else (Level.STALE if starting else Level.WARN),
                               f"{sets} synchronised sets",
                               {"sets": str(sets), "clock_jumps": str(jumps)}))
        return statuses

    def _depth_status(self) -> Status:
        """WARN for a camera whose last decoded depth map has (almost) no valid pixel: the policy
        still runs (that view contributes colour only), but a covered lens or a dead projector
        must not go unnoticed."""
        valid = dict(self._valid_depth)
        values = {camera: f"{share:.3f}" for camera, share in valid.items()}
        low = {camera: share for camera, share in valid.items() if share < MIN_VALID_DEPTH_SHARE}
        if low:
            return Status("depth", Level.WARN, "; ".join(
                f"{camera}: {share:.1%} valid depth pixels (< {MIN_VALID_DEPTH_SHARE:.0%})"
                for camera, share in low.items()), values)
        return Status("depth", Level.OK, "OK" if valid else "no depth decoded yet", values)

    def publish_diagnostics(self) -> None:
        self.diagnostics.publish(self.statuses())
