"""`RemotePolicy` against `PolicyServer` on loopback (a server thread, a scripted policy): answers,
tokens, exposure rules, metadata checks, and every remote fault raising a `RemotePolicyError` that
says what happened and when the next attempt is, with the connection re-opened after the backoff.
The graph-level behaviour (hold, /diagnostics, separate processes) is test_fault_remote_policy.py."""
from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest

from ros_graph_fixtures import observation, runtime_config
from vla3d_ros.remote.client import (Backoff, RemotePolicy, RemotePolicyError, RemotePolicyMismatch,
                                     connect_remote_policy, metadata_problems)
from vla3d_ros.remote.protocol import server_metadata
from vla3d_ros.remote.server import PolicyServer, check_exposure, is_loopback
from vla3d_ros.types import EE_DELTA_ACTION_NAMES


class ScriptedPolicy:
    """Answers (horizon, 7) actions equal to the observation's gripper; `mode` injects a fault."""

    def __init__(self, horizon: int = 4) -> None:
        self.horizon = horizon
        self.mode: str | None = None
        self.seen = []
        self.slow_done = threading.Event()

    def infer(self, obs):
        self.seen.append(obs)
        if self.mode == "raise":
            raise RuntimeError("injected: CUDA out of memory")
        if self.mode == "slow":
            time.sleep(0.5)   # the fault itself (a slow model), not synchronisation
            self.slow_done.set()
        return {"actions": np.full((self.horizon, 7), obs.gripper, np.float32), "timing_ms": {"total": 1.0}}


def metadata(num_views: int = 2, state_dim: int = 15, action_names=EE_DELTA_ACTION_NAMES) -> dict:
    return server_metadata(num_views=num_views, image_size=(16, 16), state_dim=state_dim, action_names=action_names,
                           step_period=0.1, horizon=4)


@contextlib.contextmanager
def serving(policy, server_class=PolicyServer, **kwargs):
    server = server_class(policy, kwargs.pop("metadata", None) or metadata(), port=0, **kwargs)
    port = server.start()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{port}", server
    finally:
        server.shutdown()
        thread.join(timeout=10)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def client(url: str, clock=None, **kwargs) -> RemotePolicy:
    config = runtime_config()
    return RemotePolicy(url, lambda m: metadata_problems(m, config), reply_timeout=kwargs.pop("reply_timeout", 2.0),
                        clock=clock or time.monotonic, **kwargs)


OBS = observation(2, np.random.default_rng(0))


def test_infer_round_trip_delivers_the_observation_and_the_chunk():
    policy = ScriptedPolicy()
    with serving(policy) as (url, _):
        remote = client(url)
        loaded = connect_remote_policy(url, runtime_config())
        try:
            obs = observation(5, np.random.default_rng(1))
            output = remote.infer(obs)
            seen = policy.seen[-1]
            assert np.array_equal(seen.rgb, obs.rgb) and np.array_equal(seen.depth, obs.depth)
            assert np.array_equal(seen.T_base_cam, obs.T_base_cam) and seen.instruction == obs.instruction
            assert output["actions"].shape == (4, 7) and np.all(output["actions"] == obs.gripper)
            assert loaded.dimension_names == EE_DELTA_ACTION_NAMES and loaded.step_period == 0.1
            assert loaded.policy.infer(loaded.warmup_observation)["actions"].shape == (4, 7)
        finally:
            remote.close()
            loaded.policy.close()


def test_a_token_protected_server_refuses_clients_without_the_token():
    with serving(ScriptedPolicy(), token="s3cret") as (url, _):
        for token in (None, "wrong"):
            with pytest.raises(RemotePolicyError, match="HTTP 401: wrong or missing token"):
                client(url, token=token).connect()
        remote = client(url, token="s3cret")
        assert remote.infer(OBS)["actions"].shape == (4, 7)
        remote.close()


def test_only_loopback_binds_without_an_explicit_flag_and_a_token():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.3.2.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20") and not is_loopback("robot.local")
    check_exposure("127.0.0.1", allow_remote=False, token=None)
    with pytest.raises(ValueError, match="--allow-remote"):
        check_exposure("0.0.0.0", allow_remote=False, token="t")
    with pytest.raises(ValueError, match="needs a shared token"):
        check_exposure("0.0.0.0", allow_remote=True, token=None)
    check_exposure("0.0.0.0", allow_remote=True, token="t")
    with pytest.raises(ValueError, match="--allow-remote"):
        PolicyServer(ScriptedPolicy(), metadata(), host="0.0.0.0")


@pytest.mark.parametrize("served, text", [
    (metadata(num_views=3), "takes 3 cameras, the config has 2 \\['front', 'wrist'\\]"),
    (metadata(state_dim=14), "state of 14 \\(6 joints \\+ ee pose \\+ gripper\\), the config has 7 joints"),
    (metadata(action_names=("a", "b")), "actions are \\['a', 'b'\\], the servo adapter executes"),
    ({**metadata(), "protocol_version": 2}, "protocol version 2, this client 1"),
    ({"hello": 1}, "metadata lacks"),
])
def test_a_server_whose_policy_does_not_fit_the_config_is_refused(served, text):
    config = runtime_config(joint_names=[f"joint{i}" for i in range(1, 8)])
    with serving(ScriptedPolicy(), metadata=served) as (url, _):
        with pytest.raises(RemotePolicyMismatch, match=text):
            connect_remote_policy(url, config)


def test_slow_reply_times_out_drops_the_connection_and_reconnects_after_the_backoff():
    policy, clock = ScriptedPolicy(), FakeClock()
    with serving(policy) as (url, _):
        remote = client(url, clock, reply_timeout=0.1, backoff=Backoff(0.2, 1.0))
        remote.connect()
        policy.mode = "slow"
        with pytest.raises(RemotePolicyError, match="no reply within 0.1 s, connection dropped; reconnecting in 0.2 s"):
            remote.infer(OBS)
        assert not remote.connected
        policy.mode = None
        with pytest.raises(RemotePolicyError, match="not connected \\(no reply within 0.1 s.*next attempt in 0.2 s"):
            remote.infer(OBS)
        clock.now += 0.2
        assert policy.slow_done.wait(timeout=5.0)   # the server answers one request at a time
        # the late answer to the slow request is never taken for this one: a fresh connection
        assert remote.infer(observation(1, np.random.default_rng(4)))["actions"].shape == (4, 7)
        assert remote.connections == 2 and remote.backoff.failures == 0
        remote.close()


def test_a_policy_error_comes_back_as_text_and_the_connection_stays():
    policy = ScriptedPolicy()
    with serving(policy) as (url, server):
        remote = client(url)
        policy.mode = "raise"
        with pytest.raises(RemotePolicyError,
                           match="answered with an error: RuntimeError: injected: CUDA out of memory"):
            remote.infer(OBS)
        assert remote.connected and server.errors == 1
        policy.mode = None
        remote.infer(OBS)
        assert remote.connections == 1
        remote.close()


class FaultyFrameServer(PolicyServer):
    """Answers every request with `frame` (bytes) instead of the policy's reply."""

    frame = b"\xc1 not msgpack"

    def answer(self, data):
        super().answer(data)
        return self.frame


def test_a_malformed_reply_drops_the_connection():
    with serving(ScriptedPolicy(), FaultyFrameServer) as (url, _):
        remote = client(url)
        with pytest.raises(RemotePolicyError, match=r"malformed reply: not a msgpack message \(FormatError\)"):
            remote.infer(OBS)
        assert not remote.connected


def test_an_oversized_reply_closes_the_connection():
    with serving(ScriptedPolicy(horizon=200)) as (url, _):   # 200 x 7 float32 = 5.6 KB of actions
        remote = client(url, max_reply_bytes=4096)
        with pytest.raises(RemotePolicyError, match="connection lost: .*1009 \\(message too big\\)"):
            remote.infer(OBS)
        assert not remote.connected


def test_an_oversized_request_closes_the_connection():
    policy = ScriptedPolicy()
    with serving(policy, max_request_bytes=2048) as (url, _):
        remote = client(url)
        with pytest.raises(RemotePolicyError, match="connection lost"):
            remote.infer(OBS)        # 2 x 16 x 16 RGB-D is ~5 KB
        assert not policy.seen


def test_server_gone_then_back_reconnects_with_growing_backoff():
    clock = FakeClock()
    with serving(ScriptedPolicy()) as (url, _):
        remote = client(url, clock, backoff=Backoff(0.1, 0.3))
        remote.infer(OBS)
    with pytest.raises(RemotePolicyError, match="connection lost.*reconnecting in 0.1 s \\(attempt 1\\)"):
        remote.infer(OBS)
    delays = []
    for attempt in range(2, 5):
        clock.now = remote._next_attempt
        with pytest.raises(RemotePolicyError, match=f"cannot connect: ConnectionRefusedError.*attempt {attempt}"):
            remote.infer(OBS)
        delays.append(round(remote._next_attempt - clock.now, 6))
    assert delays == [0.2, 0.3, 0.3]
    port = int(url.rsplit(":", 1)[1])
    server = PolicyServer(ScriptedPolicy(), metadata(), port=port)
    server.start()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        clock.now = remote._next_attempt
        assert remote.infer(OBS)["actions"].shape == (4, 7)
        assert remote.connections == 2
    finally:
        remote.close()
        server.shutdown()
        thread.join(timeout=10)


def test_the_runtime_config_takes_a_policy_server_url_instead_of_a_checkpoint():
    from vla3d_ros.runtime.config import ConfigError

    assert runtime_config(policy="ws://10.0.0.5:8000").policy == "ws://10.0.0.5:8000"
    for bad in ("http://host:8000", "ws://host", "ws://:8000", "ws://host:99999"):
        with pytest.raises(ConfigError, match=f"policy: expected a policy server URL ws://host:port .*got '{bad}'"):
            runtime_config(policy=bad)
    with pytest.raises(ConfigError, match="policy: expected no checkpoint as well"):
        runtime_config(policy="ws://127.0.0.1:8000", checkpoint="/ckpt")


def test_something_that_is_not_a_websocket_server_is_a_failed_attempt_with_backoff():
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_http() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(4096)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")

    thread = threading.Thread(target=answer_http)
    thread.start()
    clock = FakeClock()
    remote = client(f"ws://127.0.0.1:{port}", clock)
    try:
        with pytest.raises(RemotePolicyError, match="did not accept the websocket \\(HTTP 200\\); reconnecting in 0.1 s"):
            remote.infer(OBS)
        assert not remote.connected and remote._next_attempt == clock.now + 0.1
    finally:
        thread.join(timeout=10)
        listener.close()
