"""inference_node: a lifecycle node running the policy on the newest synchronised observation.

Lifecycle (REP / ros2 managed nodes):
- configure: load the checkpoint (safetensors + JSON, `vla3d_ros.model.checkpoint`) on `device`
  (cuda when available under "auto"), or connect to the policy server of `policy: ws://host:port`
  and check its metadata against the config (`vla3d_ros.remote.client`); warm it up on a
  synthetic observation, create the publishers and the instruction subscription. A checkpoint
  that cannot be loaded, a server whose policy does not fit the config or a policy that fails its
  warm-up makes the transition FAIL (the node stays unconfigured, and says why). A server that
  cannot be reached fails it too, and the node retries configure + activate with backoff until
  the server answers (the arm holds meanwhile: nothing is published).
- activate: run at `rates.inference_hz` on the node's clock (trigger "timer", real robots) or on
  every synchronised set at most at that rate in stamp time (trigger "observation": lockstep
  simulation and bag replay, where sim time only advances when the graph has answered).
- deactivate: stop running (timer destroyed / listener removed); cleanup: release everything
  (publishers, subscription, timers, the policy and its device memory).

Each run goes through `runtime.policy_runner.PolicyRunner`, which turns every policy fault into a
status instead of an exception, and publishes: ActionChunk, Instance3DArray, the completed points
(PointCloud2, base frame) and the per-module timing (DiagnosticArray on `topics.INFERENCE_TIMING`).
The instruction comes from `config.instruction_topic` (std_msgs/String) or the `instruction`
parameter (latest wins).
"""
from __future__ import annotations

import dataclasses
import gc
import re
import threading
from collections import Counter
from collections.abc import Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String

import vla3d_ros.msg
from vla3d_ros.msg import Instance3DArray
from vla3d_ros.remote.client import Backoff, RemotePolicyError, RemotePolicyMismatch, connect_remote_policy
from vla3d_ros.ros import conversions
from vla3d_ros.ros import topics
from vla3d_ros.ros.common import DiagnosticsPublisher, declare_config, describe, log_at, node_parameters, now_seconds
from vla3d_ros.ros.qos import RELIABLE_QOS
from vla3d_ros.runtime.chunk_executor import replanning_margin
from vla3d_ros.runtime.config import RuntimeConfig
from vla3d_ros.runtime.diagnostics import Level, Status
from vla3d_ros.model.instruction_retrieval import RetrievingInstructionEncoder
from vla3d_ros.runtime.policy_runner import PolicyResult, PolicyRunner, validate_instruction
from vla3d_ros.runtime.policy_source import LoadedPolicy, load_checkpoint_policy, resolve_device
from vla3d_ros.runtime.watchdog import InferenceOverrunMonitor

TRIGGERS = ("timer", "observation")
# Stamps within this of a multiple of the period count as due (float seconds from integer ns).
_DUE_EPS = 1e-6
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _close(policy) -> None:
    """Release what a policy holds outside the process (a policy server's connection)."""
    close = getattr(policy, "close", None)
    if close is not None:
        close()


def _quote(instruction: str, limit: int = 80) -> str:
    """An instruction for a status line: repr, at most `limit` characters of it."""
    return repr(instruction) if len(instruction) <= limit else f"{instruction[:limit]!r}..."


class InferenceNode(LifecycleNode):
    """See the module docstring.

    Parameters (`ros2 param describe` prints these descriptions): `config` (read-only, see
    `common.declare_config`), `checkpoint`, `device`, `torch_threads` (read at configure),
    `instruction` (any time). An empty `checkpoint` or `instruction` means the config's.

    Args:
        config: the runtime config; None = the file named by the `config` parameter.
        observations: the camera sync node of this process (`observation(instruction)`,
            `add_listener`, `remove_listener`); must be set before activate.
        trigger: "timer" or "observation".
        policy_loader: (checkpoint, device, precision) -> LoadedPolicy; the default loads a vla3d
            checkpoint (a `policy` server URL, when set, is used instead of any checkpoint). `precision`
            is resolved ("fp32" or "bf16") from the `precision` parameter.
    """

    def __init__(self, config: RuntimeConfig | None = None, observations=None, *, trigger: str = "timer",
                 policy_loader: Callable[[str, str, str], LoadedPolicy] = load_checkpoint_policy,
                 use_sim_time: bool = False, context=None, name: str = "vla3d_inference") -> None:
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")
        super().__init__(name, context=context, parameter_overrides=node_parameters(use_sim_time))
        # What destroy_node needs, first: a bad parameter below ends construction, and rclpy then
        # destroys the half-built node when its context shuts down.
        self.observations = observations
        self._run_lock = threading.Lock()   # one inference at a time, whatever the executor
        self._run_timer = None
        self._set_guard = None               # trigger "observation": runs the due inference (see _on_new_set)
        self.config = config = declare_config(self, config)
        self.trigger = trigger
        self.policy_loader = policy_loader
        self.declare_parameter("checkpoint", config.checkpoint or "", describe(
            "policy checkpoint directory (model.safetensors + config.json), loaded at configure; "
            "empty = the runtime config's `checkpoint`"))
        self.declare_parameter("policy", config.policy or "", describe(
            "ws://host:port of a `vla3d serve` policy server, used instead of a checkpoint; connected at "
            "configure; empty = the runtime config's `policy` (or the checkpoint)"))
        self.declare_parameter("device", config.device, describe(
            "torch device of the policy, applied at configure", constraints="auto, cpu or cuda; "
            "auto = cuda when available"))
        self.declare_parameter("torch_threads", config.torch_threads, describe(
            "torch intra-op threads of this process, applied at configure", integer_range=(1, 256)))
        self.declare_parameter("precision", config.precision, describe(
            "numeric precision of the policy's forward, applied at configure",
            constraints="auto, fp32 or bf16; auto = bf16 where the CPU/GPU computes bf16 natively"))
        self.declare_parameter("instruction", config.instruction, describe(
            "the task instruction; also settable on `instruction_topic` (latest wins); empty = the "
            "runtime config's", constraints=f"at most {config.max_instruction_chars} characters"))
        self.instruction = config.instruction
        self.instruction_status = Status("instruction", Level.OK, f"using {_quote(self.instruction)}")
        if self.get_parameter("instruction").value not in ("", config.instruction):   # from a params file
            self._set_instruction(self.get_parameter("instruction").value)
        self.add_on_set_parameters_callback(self._on_parameters)
        self.period = 1.0 / config.rates.inference_hz
        self.runner: PolicyRunner | None = None
        self.device: str | None = None
        self.precision: str | None = None
        self.overruns = InferenceOverrunMonitor(self.period)
        self.status = Status("inference", Level.STALE, "unconfigured")
        self.horizon_status = Status("chunk horizon", Level.STALE, "unconfigured")
        self._inference_group = MutuallyExclusiveCallbackGroup()
        self._last_stamp: float | None = None
        self._outputs: dict[str, object] = {}
        self.published: Counter[str] = Counter()   # topic -> outputs published (what consumers must get)
        self._instruction_subscription = None
        self._new_set_stamp: float | None = None
        self._server_backoff = Backoff(initial=0.5, maximum=5.0)   # configure retries, server unreachable
        self._retry_timer = None
        # From construction on, not from configure: a configure that fails (bad checkpoint) must
        # reach /diagnostics too, and an unconfigured node says so.
        self._diagnostics = DiagnosticsPublisher(self)
        self.create_timer(1.0 / config.rates.diagnostics_hz, self.publish_diagnostics)

    # ---- instruction ------------------------------------------------------------------------

    def _set_instruction(self, text) -> str | None:
        """Validate and take a new instruction; returns the error, or None.

        A refusal stays a WARN on /diagnostics until an instruction is accepted: the operator's
        latest command is not what the robot is doing.
        """
        try:
            self.instruction = validate_instruction(text, self.config.max_instruction_chars)
        except ValueError as error:
            self.get_logger().error(f"instruction refused: {error}")
            self.instruction_status = Status("instruction", Level.WARN,
                                             f"refused: {error}; still using {_quote(self.instruction)}")
            return str(error)
        self.instruction_status = Status("instruction", Level.OK, self._using_instruction())
        return None

    def _using_instruction(self) -> str:
        """The instruction status line; with instruction retrieval, also the trained instruction the
        policy acts on, so the operator sees what the robot understood."""
        line = f"using {_quote(self.instruction)}"
        encoder = getattr(getattr(self.runner, "policy", None), "instruction_encoder", None)
        if isinstance(encoder, RetrievingInstructionEncoder) and self.instruction:
            match = encoder.match(self.instruction)
            if match.instruction != self.instruction:
                line += f", acted on as the trained {_quote(match.instruction)} (cosine {match.similarity:.2f})"
        return line

    def _on_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            if parameter.name == "instruction" and parameter.value:
                error = self._set_instruction(parameter.value)
                if error:
                    return SetParametersResult(successful=False, reason=error)
        return SetParametersResult(successful=True)

    def _on_instruction(self, msg: String) -> None:
        self._set_instruction(msg.data)

    # ---- lifecycle --------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        # rclpy swallows exceptions raised in transition callbacks: say what happened.
        try:
            return self._configure(state)
        except Exception as error:  # noqa: BLE001
            self._release()
            return self._fail_transition(f"configure raised {type(error).__name__}: {error}")

    def _configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        url = self.get_parameter("policy").value
        if url:
            try:
                loaded = connect_remote_policy(url, self.config)
            except RemotePolicyMismatch as error:
                return self._fail_transition(f"cannot use policy server {url}: {error.reason}")
            except RemotePolicyError as error:
                delay = self._server_backoff.next_delay()
                # Wall time: a server comes back in seconds of real time, whatever /clock does.
                self._retry_timer = self.create_timer(delay, self._retry_start,
                                                      clock=Clock(clock_type=ClockType.STEADY_TIME))
                return self._fail_transition(f"cannot use policy server {url}: {error.reason}; configure retried "
                                             f"in {delay:.1f} s (attempt {self._server_backoff.failures})")
            self._server_backoff.reset()
            self.device = source = f"policy server {url}"
        else:
            loaded = self._load_checkpoint()
            if isinstance(loaded, str):
                return self._fail_transition(loaded)
            source = (f"{self.get_parameter('checkpoint').value or self.config.checkpoint} on {self.device} "
                      f"({self.get_parameter('torch_threads').value} torch threads, {self.precision})")
        runner = PolicyRunner(loaded.policy, loaded.dimension_names, loaded.step_period,
                              max_observation_age=self.config.watchdog.observation_timeout)
        warmup = dataclasses.replace(loaded.warmup_observation,
                                     instruction=self.instruction or loaded.warmup_observation.instruction)
        # Two passes: the first pays one-time costs (the sentence encoder loads on its first
        # instruction, allocator and kernel warm-up), often many times a steady inference, so the
        # horizon check below uses the second, steady-state latency.
        warmup_latencies = []
        for _ in range(2):
            result = runner.run(warmup)
            if not result.ok:
                _close(loaded.policy)
                return self._fail_transition(f"warm-up failed: {result.status.message}")
            warmup_latencies.append(result.latency)
        self.runner = runner
        self.instruction_status = Status("instruction", Level.OK, self._using_instruction())
        # Process-wide, like the torch threads: the policy, the sentence encoder and their libraries
        # are hundreds of thousands of long-lived objects, and every full garbage collection walks
        # them with the GIL held, a pause that stalls every node of the process and can outlast the
        # observation watchdog (seen in the soak, docs/reliability.md). Frozen, they are out of the
        # collector's way.
        gc.collect()
        gc.freeze()
        self.get_logger().info(f"policy loaded from {source}; warm-up "
                               f"{warmup_latencies[0] * 1000:.0f} ms, then {warmup_latencies[1] * 1000:.0f} ms, "
                               f"chunk {result.chunk.actions.shape}")
        horizon = result.chunk.actions.shape[0]
        margin = replanning_margin(horizon, loaded.step_period, self.period, result.latency)
        coverage = (f"the chunk covers {horizon} x {loaded.step_period} s; inference period "
                    f"{self.period:.3f} s + inference latency {result.latency:.3f} s")
        if margin < 0:
            self.horizon_status = Status("chunk horizon", Level.WARN, f"{coverage}: the arm will hold between chunks; "
                                         "raise rates.inference_hz or train a longer horizon")
            self.get_logger().warning(self.horizon_status.message)
        else:
            self.horizon_status = Status("chunk horizon", Level.OK, f"{coverage}: {margin:.3f} s to spare")
        self._outputs = {
            "chunk": self.create_lifecycle_publisher(vla3d_ros.msg.ActionChunk, topics.ACTION_CHUNK, RELIABLE_QOS),
            "instances": self.create_lifecycle_publisher(Instance3DArray, topics.INSTANCES, RELIABLE_QOS),
            "points": self.create_lifecycle_publisher(PointCloud2, topics.COMPLETED_POINTS, RELIABLE_QOS),
            "timing": self.create_lifecycle_publisher(DiagnosticArray, topics.INFERENCE_TIMING, RELIABLE_QOS),
        }
        self._instruction_subscription = self.create_subscription(
            String, self.config.instruction_topic, self._on_instruction, RELIABLE_QOS)
        self.status = Status("inference", Level.WARN, "configured, inactive")
        return super().on_configure(state)

    def _load_checkpoint(self) -> LoadedPolicy | str:
        """The checkpoint's policy on the configured device and precision, or why it cannot be loaded."""
        from vla3d_ros.model.precision import PRECISIONS, resolve_precision

        checkpoint = self.get_parameter("checkpoint").value or self.config.checkpoint
        if not checkpoint:
            return "no policy: set the `checkpoint` or `policy` parameter or config key"
        threads = self.get_parameter("torch_threads").value   # in [1, 256]: its descriptor refuses others
        precision = self.get_parameter("precision").value
        if precision not in PRECISIONS:
            return f"precision must be one of {list(PRECISIONS)}, got {precision!r}"
        try:
            import torch
            # Process-wide: the policy is the only torch user of a graph process.
            torch.set_num_threads(threads)
            self.device = resolve_device(self.get_parameter("device").value)
            self.precision = resolve_precision(precision, self.device)
            return self.policy_loader(checkpoint, self.device, self.precision)
        except Exception as error:  # noqa: BLE001 - any load fault must fail the transition, not the process
            return f"cannot load checkpoint {checkpoint!r}: {type(error).__name__}: {error}"

    @property
    def retrying(self) -> bool:
        """A failed configure will be retried (the policy server was unreachable)."""
        return self._retry_timer is not None

    def _retry_start(self) -> None:
        """Configure (and activate) again: the policy server was unreachable at the last configure."""
        self.destroy_timer(self._retry_timer)
        self._retry_timer = None
        if self._state_machine.current_state[1] != "unconfigured":
            return   # configured in the meantime (a lifecycle manager): its call, not ours
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def _fail_transition(self, message: str) -> TransitionCallbackReturn:
        self.get_logger().error(message)
        self.status = Status("inference", Level.ERROR, message)
        return TransitionCallbackReturn.FAILURE

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._last_stamp = None
        if self.trigger == "timer":
            # Its own group: under a MultiThreadedExecutor the diagnostics timer and the instruction
            # subscription (default group) never wait behind a forward pass.
            self._run_timer = self.create_timer(self.period, self.run_once, callback_group=self._inference_group)
        else:
            self._set_guard = self.create_guard_condition(self._run_if_due, callback_group=self._inference_group)
            self.observations.add_listener(self._on_new_set)
        self.status = Status("inference", Level.OK, "active, waiting for observations")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_running()
        self.status = Status("inference", Level.WARN, "configured, inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.status = Status("inference", Level.STALE, "unconfigured")
        self.horizon_status = Status("chunk horizon", Level.STALE, "unconfigured")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._retry_timer is not None:
            self.destroy_timer(self._retry_timer)
            self._retry_timer = None
        self._stop_running()
        self._release()
        return super().on_shutdown(state)

    def _stop_running(self) -> None:
        if self._run_timer is not None:
            self.destroy_timer(self._run_timer)
            self._run_timer = None
        if self.observations is not None:
            self.observations.remove_listener(self._on_new_set)
        if self._set_guard is not None:
            self.destroy_guard_condition(self._set_guard)
            self._set_guard = None
        with self._run_lock:  # let a running inference finish before the publishers go
            pass

    def _release(self) -> None:
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs = {}
        if self._instruction_subscription is not None:
            self.destroy_subscription(self._instruction_subscription)
            self._instruction_subscription = None
        if self.runner is not None:
            _close(self.runner.policy)
        self.runner = None
        gc.unfreeze()   # the released policy's reference cycles become collectable again
        if self.device == "cuda":
            import torch
            torch.cuda.empty_cache()

    # ---- running ----------------------------------------------------------------------------

    def _on_new_set(self, stamp: float) -> None:
        """Trigger "observation": a new set is complete; the run waits for the executor's next turn.

        Why not run here, inside the camera callback that completed the set: the instruction, joint
        state and gripper opening of the same instant were published before the images (the lockstep
        player does so) but may sit unprocessed in this very wait, since an executor serves the nodes
        of one wait in an arbitrary order (rclpy keeps them in a set). Run now and the first chunk
        of an episode is computed for the previous episode's instruction. A guard condition fires
        in the next wait, after everything that arrived with the images has been taken."""
        self._new_set_stamp = stamp
        guard = self._set_guard
        if guard is not None:
            guard.trigger()

    def _run_if_due(self) -> None:
        """Run when the newest set is a period past the last run (stamp time)."""
        stamp = self._new_set_stamp
        if stamp is None:
            return
        if self._last_stamp is not None and self._last_stamp <= stamp < self._last_stamp + self.period - _DUE_EPS:
            return
        self.run_once()

    def run_once(self) -> PolicyResult | None:
        """One inference on the newest observation; None if there was nothing (new) to run on."""
        if not self._run_lock.acquire(blocking=False):
            return None  # the previous run is still going: skip this tick (an overrun)
        try:
            return self._run()
        finally:
            self._run_lock.release()

    def _run(self) -> PolicyResult | None:
        runner = self.runner
        if runner is None:
            return None
        try:
            obs = self.observations.observation(self.instruction)
        except (LookupError, ValueError) as error:
            self._report(Level.WARN if isinstance(error, LookupError) else Level.ERROR, str(error))
            return None
        if obs.stamp == self._last_stamp:
            return None  # no new synchronised set since the last run
        self._last_stamp = obs.stamp
        result = runner.run(obs, now_seconds(self))
        self.overruns.record(result.latency)
        if not result.ok:
            self._report(Level.ERROR, result.status.message)
            return result
        self._publish(result, obs.stamp)
        overrun = self.overruns.result()
        self.status = Status("inference", Level.OK if overrun.ok else Level.WARN,
                             result.status.message if overrun.ok else overrun.reason,
                             dict(result.status.values, device=str(self.device)))
        return result

    def _report(self, level: Level, message: str) -> None:
        """Status for /diagnostics; logged when the fault changes, not when only its numbers do
        (a stale transform's stamp and age change every tick: one line, not one per inference)."""
        if _NUMBER.sub("#", self.status.message) != _NUMBER.sub("#", message):
            log_at(self, level, message)
        self.status = Status("inference", level, message)

    def _publish(self, result: PolicyResult, stamp: float) -> None:
        frame = self.config.base_frame
        self._emit("chunk", conversions.action_chunk_to_msg(result.chunk, frame))
        instances = result.instances
        if instances is not None:
            self._emit("instances", conversions.instances_to_msg(instances, stamp=stamp, frame_id=frame))
            points, owner = instances.completed_points.reshape(-1, 3), instances.completed_instance
            finite = np.all(np.isfinite(points), axis=1)
            owner = owner[finite] if len(owner) == len(points) else None
            self._emit("points", conversions.points_to_cloud(points[finite], owner, stamp=stamp, frame_id=frame))
        elif result.completed_points is not None:
            self._emit("points", conversions.points_to_cloud(result.completed_points, stamp=stamp, frame_id=frame))
        timing = Status("timing_ms", Level.OK, f"total {result.latency * 1000:.1f} ms",
                        {name: f"{ms:.3f}" for name, ms in result.timing_ms.items()})
        self._emit("timing", conversions.diagnostics_to_msg([timing], stamp=stamp))

    def _emit(self, output: str, msg) -> None:
        publisher = self._outputs[output]
        publisher.publish(msg)
        self.published[publisher.topic_name] += 1

    def statuses(self) -> list[Status]:
        overrun = self.overruns.result()
        return [self.status, Status("overruns", Level.OK if overrun.ok else Level.WARN, overrun.reason),
                self.instruction_status, self.horizon_status]

    def publish_diagnostics(self) -> None:
        self._diagnostics.publish(self.statuses())

    def destroy_node(self) -> None:
        self._stop_running()
        super().destroy_node()
        # rclpy's LifecycleNode.destroy_node leaves the rcl node alive inside its state machine, so
        # the DDS participant would live until a garbage-collector pass (which can deadlock in Fast
        # DDS 3.2.2's TCP teardown, eProsima/Fast-DDS#6066). Release it now; idempotent.
        self._state_machine.destroy_when_not_in_use()
