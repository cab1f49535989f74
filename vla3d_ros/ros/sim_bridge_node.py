"""sim_bridge_node: the MuJoCo `TabletopEnv` as a robot on ROS topics, stepping in lockstep.

The env's observations are published like a real robot's (cameras, CameraInfo, depth, JointState,
gripper opening, camera and end-effector transforms, /clock) by `player.LockstepPlayer`; the
action node's MoveIt Servo twist and gripper command are turned back into the env's end-effector
delta action and executed for one control period. Sim time advances only when the graph has
answered (see `player`), so the result does not depend on how fast this machine is.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from rclpy.node import Node

from vla3d_ros.geometry import matrix_to_euler_xyz
from vla3d_ros.ros.player import LockstepPlayer, StepCommand, TransformSink
from vla3d_ros.runtime.config import RuntimeConfig
from vla3d_ros.types import Observation


def rotation_vector_to_matrix(rotation_vector: np.ndarray) -> np.ndarray:
    """Rodrigues: (3,) axis * angle -> (3, 3)."""
    angle = float(np.linalg.norm(rotation_vector))
    if angle < 1e-12:
        return np.eye(3)
    x, y, z = rotation_vector / angle
    K = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * K + (1.0 - np.cos(angle)) * (K @ K)


def twist_to_ee_delta(linear: np.ndarray, angular: np.ndarray, period: float, gripper: float) -> np.ndarray:
    """(7,) EE-delta action that a twist held for `period` seconds amounts to.

    The inverse of `runtime.safety.SafetyFilter.filter_ee_delta` (delta -> twist): translation
    = v * period, rotation = the euler-xyz angles of the rotation vector w * period.
    """
    delta = np.zeros(7)
    delta[:3] = np.asarray(linear, np.float64) * period
    delta[3:6] = matrix_to_euler_xyz(rotation_vector_to_matrix(np.asarray(angular, np.float64) * period))
    delta[6] = gripper
    return delta


@dataclass
class GraphEpisodeOutcome:
    """One sim episode played through the ROS graph (`evaluate.rollout.EpisodeOutcome` is the
    in-process evaluation's fuller record)."""

    seed: int
    instruction: str
    success: bool
    steps: int


@dataclass
class EnvSource:
    """`StepSource` over a TabletopEnv: `episodes` episodes of at most `max_steps` steps each.

    A step without a command from the controller (held, timed out) keeps the arm where it is.
    An episode ends on success or after `max_steps`.
    """

    env: object                                   # vla3d_ros.sim.env.TabletopEnv
    episodes: int = 1
    max_steps: int = 100
    seed: int = 0
    outcomes: list[GraphEpisodeOutcome] = field(default_factory=list)
    frames: list[Observation] = field(default_factory=list)   # last observation of each episode
    _episode: int = 0
    _steps: int = 0
    _last: Observation | None = None

    def reset(self) -> Observation | None:
        if self._episode >= self.episodes:
            return None
        self._steps = 0
        self._last = self.env.reset(seed=self.seed + self._episode)
        return self._last

    def advance(self, command: StepCommand) -> Observation | None:
        gripper = self._last.gripper if command.gripper is None else command.gripper
        if command.twist is None:
            action = np.zeros(7)
            action[6] = gripper
        else:
            action = twist_to_ee_delta(command.twist.linear, command.twist.angular, self.env.control_period, gripper)
        self._last = self.env.step(action)
        self._steps += 1
        success = bool(self.env.success())
        if success or self._steps >= self.max_steps:
            self.outcomes.append(GraphEpisodeOutcome(self.seed + self._episode, self._last.instruction, success,
                                                     self._steps))
            self.frames.append(self._last)
            self._episode += 1
            return None
        return self._last


class SimBridgeNode(LockstepPlayer):
    """A LockstepPlayer over an `EnvSource`, consuming the action node's commands (closed loop)."""

    def __init__(self, config: RuntimeConfig, env, transforms: Callable[[Node], TransformSink], *, episodes: int = 1,
                 max_steps: int = 100, seed: int = 0, timeout: float = 60.0, context=None,
                 name: str = "vla3d_sim_bridge") -> None:
        missing = [name_ for name_ in config.camera_names if name_ not in tuple(env.camera_names)]
        if missing:
            raise ValueError(f"the config's cameras {missing} are not in the simulator's {tuple(env.camera_names)}")
        self.env_source = EnvSource(env, episodes=episodes, max_steps=max_steps, seed=seed)
        super().__init__(config, self.env_source, transforms, inference_period=1.0 / config.rates.inference_hz,
                         consume_commands=True, timeout=timeout, context=context, name=name)

    @property
    def outcomes(self) -> Sequence[GraphEpisodeOutcome]:
        return self.env_source.outcomes


@dataclass
class SimRun:
    outcomes: list[GraphEpisodeOutcome]
    frames: list[Observation]            # last observation of each episode
    steps: int
    chunks: int
    timeouts: int
    recorded: dict[str, int]             # topic -> messages recorded (empty without record_to)


def run_sim_episodes(graph, env, *, episodes: int = 1, max_steps: int = 100, seed: int = 0,
                     timeout: float = 60.0, record_to=None, arm: bool = True,
                     transforms: Callable[[Node], TransformSink] | None = None) -> SimRun:
    """Close the loop: `env` behind a SimBridgeNode, driven by `graph` (not yet started; built with
    use_sim_time=True, trigger="observation"), for `episodes` episodes; the outputs optionally
    recorded to an MCAP. `arm` arms the action node (what `~/arm` true does): a simulator is safe.
    `transforms`: where the bridge writes transforms (default `graph.transform_sink`; the demo
    tees them into its bag)."""
    from vla3d_ros.ros.graph import spin_until
    from vla3d_ros.ros.output_recorder import OutputRecorder

    context = graph.config_context
    recorder = graph.add(OutputRecorder(record_to, context=context)) if record_to is not None else None
    bridge = graph.add(SimBridgeNode(graph.config, env, transforms or graph.transform_sink, episodes=episodes,
                                     max_steps=max_steps, seed=seed, timeout=timeout, context=context))
    graph.start()
    if arm and "action" in graph.nodes:
        graph["action"].controller.state.arm()
    executor = graph.executor(multithreaded=False)
    graph.wait_connected(executor, timeout=timeout)   # before the first step goes out
    bridge.start()
    spin_until(executor, lambda: bridge.finished, timeout=timeout * episodes * (max_steps + 1))
    if recorder is not None:
        recorder.drain(graph, executor, timeout=timeout)   # the last outputs are still in flight
    executor.shutdown()
    return SimRun(list(bridge.outcomes), list(bridge.env_source.frames), bridge.stats.steps,
                  len(bridge.stats.chunks), bridge.stats.chunk_timeouts + bridge.stats.command_timeouts,
                  dict(recorder.counts) if recorder is not None else {})
