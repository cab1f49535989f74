"""`RemotePolicy`: `infer(Observation) -> dict` answered by a policy server (`vla3d serve`).

It plugs in where an in-process policy does (behind `runtime.policy_runner.PolicyRunner`), so a
remote fault is a policy fault: `infer` raises `RemotePolicyError` saying what happened, the runner
turns it into an ERROR status (on /diagnostics), no chunk is published and the arm holds when the
last chunk runs out. `infer` never blocks longer than `reply_timeout` (+ `connect_timeout` when it
reconnects): a reply later than the observation timeout could not be executed anyway.

The protocol has no request ids, so after a timeout, a malformed reply or a lost connection the
connection is dropped (a late reply must never be taken for the next request's) and re-opened by
a later `infer` with exponential backoff. Every (re)connection re-checks the server's metadata:
a server restarted with another policy is refused, not used.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.sync.client import ClientConnection, connect

from vla3d_ros.geometry import intrinsics_from_fovy
from vla3d_ros.remote.protocol import (MAX_REPLY_BYTES, PROTOCOL_VERSION, WireError, observation_to_wire, packb,
                                       reply_from_wire, unpackb)
from vla3d_ros.remote.server import TOKEN_SCHEME
from vla3d_ros.runtime.config import RuntimeConfig
from vla3d_ros.runtime.policy_source import LoadedPolicy
from vla3d_ros.runtime.safety import accepted_dimensions
from vla3d_ros.types import Observation

TOKEN_ENV = "VLA3D_POLICY_TOKEN"    # the shared token, on the server and on the robot PC
# Observation.state = joints (J) + ee pose (7) + gripper (1).
_NON_JOINT_STATE = 8


class RemotePolicyError(RuntimeError):
    """The policy server could not answer this request: the message says why and what happens next,
    `reason` only why."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class RemotePolicyMismatch(RemotePolicyError):
    """The server answers, but its policy does not fit this robot's config (cameras, state, actions)."""


class Backoff:
    """Delays between reconnection attempts: `initial`, doubling per failure, at most `maximum` (s)."""

    def __init__(self, initial: float = 0.1, maximum: float = 2.0) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {initial}, {maximum}")
        self.initial, self.maximum = initial, maximum
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt, counting one more failure."""
        self.failures += 1
        return min(self.maximum, self.initial * 2 ** (self.failures - 1))

    def reset(self) -> None:
        self.failures = 0


def metadata_problems(metadata: Any, config: RuntimeConfig) -> list[str]:
    """Why a server (its connect metadata) cannot serve the graph of `config`; empty if it can."""
    if not isinstance(metadata, Mapping):
        return [f"metadata must be a map, got {type(metadata).__name__}"]
    required = ("num_views", "state_dim", "action_names", "step_period", "horizon")
    missing = [key for key in required if key not in metadata]
    if missing:
        return [f"metadata lacks {missing} (is it a vla3d server? keys: {sorted(map(str, metadata))})"]
    problems = []
    if metadata.get("protocol_version", PROTOCOL_VERSION) != PROTOCOL_VERSION:
        problems.append(f"the server speaks protocol version {metadata['protocol_version']!r}, "
                        f"this client {PROTOCOL_VERSION}")
    cameras = config.camera_names
    if metadata["num_views"] != len(cameras):
        problems.append(f"the server's policy takes {metadata['num_views']} cameras, "
                        f"the config has {len(cameras)} {list(cameras)}")
    served_names = tuple(metadata.get("camera_names") or ())
    if served_names and served_names != cameras:
        problems.append(f"the server's cameras are {list(served_names)}, the config's {list(cameras)}")
    if config.joint_names and metadata["state_dim"] != len(config.joint_names) + _NON_JOINT_STATE:
        problems.append(f"the server's policy takes a state of {metadata['state_dim']} "
                        f"({metadata['state_dim'] - _NON_JOINT_STATE} joints + ee pose + gripper), the config has "
                        f"{len(config.joint_names)} joints")
    names = tuple(metadata["action_names"]) if isinstance(metadata["action_names"], (list, tuple)) else None
    accepted = accepted_dimensions(config.output.adapter, config.output.ros2_control.joint_names)
    if names not in accepted:
        problems.append(f"the server's actions are {metadata['action_names']}, the {config.output.adapter} "
                        f"adapter executes {list(accepted[0])}")
    step_period, horizon = metadata["step_period"], metadata["horizon"]
    if not isinstance(step_period, (int, float)) or not math.isfinite(step_period) or step_period <= 0:
        problems.append(f"step_period must be a number > 0, got {step_period!r}")
    if not isinstance(horizon, int) or horizon < 1:
        problems.append(f"horizon must be an integer >= 1, got {horizon!r}")
    return problems


class RemotePolicy:
    """See the module docstring.

    Args:
        url: ws://host:port of the server.
        check: metadata -> list of problems (empty = usable); run on every (re)connection.
        reply_timeout: s to wait for a reply before dropping the connection.
        connect_timeout: s for TCP + websocket handshake + the metadata frame.
        token: sent as openpi's client does (`Authorization: Api-Key <token>`).
        max_reply_bytes: a larger reply closes the connection (websockets' `max_size`).
        backoff: reconnection delays.
        clock: monotonic seconds.
    """

    def __init__(self, url: str, check: Callable[[Any], list[str]], *, reply_timeout: float,
                 connect_timeout: float | None = None, token: str | None = None,
                 max_reply_bytes: int = MAX_REPLY_BYTES, backoff: Backoff | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.check = check
        self.reply_timeout = reply_timeout
        self.connect_timeout = connect_timeout if connect_timeout is not None else reply_timeout
        self.token = token
        self.max_reply_bytes = max_reply_bytes
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.metadata: dict | None = None
        self.connections = 0            # successful (re)connections
        self._connection: ClientConnection | None = None
        self._next_attempt = 0.0
        self._last_error = "never connected"

    @property
    def connected(self) -> bool:
        return self._connection is not None

    def connect(self) -> dict:
        """Open the connection and check the server's metadata; RemotePolicyError if either fails."""
        headers = {"Authorization": f"{TOKEN_SCHEME} {self.token}"} if self.token else None
        try:
            # legacy=True: the connection outlives this call (websockets 17 warns otherwise).
            connection = connect(self.url, legacy=True, open_timeout=self.connect_timeout, compression=None,
                                 max_size=self.max_reply_bytes, additional_headers=headers,
                                 close_timeout=self.connect_timeout)
        except InvalidStatus as error:
            raise self._failed(f"the server did not accept the websocket (HTTP {error.response.status_code}"
                               f"{': wrong or missing token' if error.response.status_code == 401 else ''})")
        except InvalidURI as error:
            raise self._failed(f"not a websocket URL: {error}")
        except (OSError, TimeoutError, WebSocketException) as error:   # refused, unreachable, not a websocket
            raise self._failed(f"cannot connect: {type(error).__name__}: {error}")
        try:
            metadata = unpackb(connection.recv(timeout=self.connect_timeout))
        except (TimeoutError, ConnectionClosed, WireError) as error:
            connection.close_socket()
            raise self._failed(f"no valid metadata frame on connect: {type(error).__name__}: {error}")
        problems = self.check(metadata)
        if problems:
            connection.close()
            raise self._failed("the server's policy does not fit this robot's config: " + "; ".join(problems),
                               RemotePolicyMismatch)
        self._connection, self.metadata = connection, dict(metadata)
        self.connections += 1
        return self.metadata

    def _failed(self, reason: str, kind: type[RemotePolicyError] = RemotePolicyError) -> RemotePolicyError:
        """Record a failed attempt, schedule the next one; the error to raise."""
        delay = self.backoff.next_delay()
        self._next_attempt = self.clock() + delay
        self._last_error = reason
        return kind(f"policy server {self.url}: {reason}; reconnecting in {delay:.1f} s "
                    f"(attempt {self.backoff.failures})", reason)

    def _drop(self, reason: str) -> RemotePolicyError:
        """Abort the connection (no close handshake: a peer stuck sending a huge or late reply would
        hold it for `close_timeout`) and schedule a reconnection."""
        if self._connection is not None:
            self._connection.close_socket()
            self._connection = None
        return self._failed(reason)

    def infer(self, obs: Observation) -> dict:
        """The server's answer for `obs` (same dict as an in-process policy); RemotePolicyError if none."""
        if self._connection is None:
            wait = self._next_attempt - self.clock()
            if wait > 0:
                raise RemotePolicyError(f"policy server {self.url}: not connected ({self._last_error}); "
                                        f"next attempt in {wait:.1f} s")
            self.connect()
        try:
            self._connection.send(packb(observation_to_wire(obs)))
            reply = self._connection.recv(timeout=self.reply_timeout)
        except TimeoutError:
            raise self._drop(f"no reply within {self.reply_timeout} s, connection dropped") from None
        except (WebSocketException, OSError) as error:   # closed, reset, or a protocol violation
            raise self._drop(f"connection lost: {error}") from None
        if isinstance(reply, str):
            # The server answered this request with an error; the connection is still in step.
            raise RemotePolicyError(f"policy server {self.url} answered with an error: {reply[:300]}")
        try:
            output = reply_from_wire(unpackb(reply))
        except WireError as error:
            raise self._drop(f"malformed reply: {error}") from None
        self.backoff.reset()
        return output

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def warmup_observation(metadata: Mapping, config: RuntimeConfig) -> Observation:
    """A plain observation of the shape the server's policy takes (grey images, 1 m depth)."""
    views = int(metadata["num_views"])
    height, width = (int(n) for n in metadata.get("image_size") or (128, 128))
    joints = int(metadata["state_dim"]) - _NON_JOINT_STATE
    T = np.tile(np.eye(4), (views, 1, 1))
    T[:, 2, 3] = 1.0
    return Observation(
        camera_names=config.camera_names, rgb=np.full((views, height, width, 3), 128, np.uint8),
        depth=np.ones((views, height, width), np.float32),
        intrinsics=np.stack([intrinsics_from_fovy(60.0, width, height)] * views), T_base_cam=T,
        joint_positions=np.zeros(joints, np.float32), ee_pose=np.array([0.4, 0, 0.3, 0, 0, 0, 1], np.float32),
        gripper=1.0, instruction=config.instruction or "warm up",
        joint_names=config.joint_names if len(config.joint_names) == joints else ())


def connect_remote_policy(url: str, config: RuntimeConfig) -> LoadedPolicy:
    """Connect to the policy server at `url` for the graph of `config` (RemotePolicyError if it
    cannot serve it). Replies are awaited up to the config's observation timeout; the token comes
    from $VLA3D_POLICY_TOKEN."""
    policy = RemotePolicy(url, lambda metadata: metadata_problems(metadata, config),
                          reply_timeout=config.watchdog.observation_timeout,
                          connect_timeout=max(1.0, config.watchdog.observation_timeout),
                          token=os.environ.get(TOKEN_ENV) or None)
    metadata = policy.connect()
    return LoadedPolicy(policy, tuple(metadata["action_names"]), float(metadata["step_period"]),
                        warmup_observation(metadata, config))
