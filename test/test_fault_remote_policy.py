"""Remote policy faults: the graph runs here, the policy in `vla3d serve` in another process on loopback
(`policy: ws://127.0.0.1:PORT`). The server is down at start, killed mid-run and restarted, slow,
or answers with a malformed or an oversized reply; each time the arm holds, the reason is on
/diagnostics and in the log, and the node reconnects (with backoff) once the server is healthy.
See fault_rig.py for the rig and docs/reliability.md for the table these cases fill."""
from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from fault_rig import FaultRig, conclude, fault_config
from remote_fault_server import MODE_FILE_ENV, SLOW_S
from remote_fixtures import CHILD_ENV, SERVER_START_S, serve_args, start_server
from ros_graph_fixtures import save_tiny_checkpoint
from vla3d_ros.remote.server import ServerProcess
from vla3d_ros.ros.graph import build_graph
from vla3d_ros.runtime.diagnostics import Level

@pytest.fixture(scope="module")
def served_checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("remote_ckpt") / "tiny")


@pytest.fixture(scope="module")
def fault_server(served_checkpoint, tmp_path_factory):
    """One spoilable server for the answer faults; yields (server, mode file)."""
    mode = tmp_path_factory.mktemp("remote_mode") / "mode"
    mode.write_text("")
    server = ServerProcess(serve_args(served_checkpoint), timeout=SERVER_START_S, module="remote_fault_server",
                           env={**CHILD_ENV, MODE_FILE_ENV: str(mode)})
    yield server, mode
    server.stop()


@pytest.fixture
def make_rig(ros_context, tmp_path, monkeypatch, capfd):
    rigs = []

    def make(url: str) -> FaultRig:
        rigs.append(FaultRig(ros_context, tmp_path, None, monkeypatch, console=capfd,
                             config=fault_config(policy=url)))
        return rigs[-1]
    yield make
    for rig in rigs:
        rig.destroy()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LinkRelay:
    """The network between the robot PC and the workstation: a TCP relay on loopback to `target_port`.

    `cut()` is a pulled cable: bytes stop flowing both ways and new connections are not served (the
    kernel still completes their TCP handshake, so a client waits out its timeout, as on a real
    link); `restore()` resets the stalled connections, as their peers' TCP stacks eventually do,
    and serves again.
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.stopped = False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped:
            if not self.up.wait(0.1):
                continue
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.up.wait()           # the link is down: the bytes go nowhere until restore()
                sink.sendall(data)       # (which closed this pair: the send fails, the pump ends)
        except OSError:
            pass
        finally:
            self._close(source, sink)

    @staticmethod
    def _close(*sockets: socket.socket) -> None:
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)   # wakes a pump blocked in recv()
            except OSError:
                pass
            sock.close()

    def cut(self) -> None:
        self.up.clear()

    def restore(self) -> None:
        with self.lock:
            stalled, self.sockets = self.sockets, []
        self._close(*stalled)
        self.up.set()

    def close(self) -> None:
        self.stopped = True
        self.restore()
        self.thread.join(timeout=5)
        self.listener.close()


def _first(find, texts: tuple[str, ...]):
    return next((found for found in map(find, texts) if found is not None), None)


def wait_hold(rig: FaultRig, *texts: str, timeout: float = 8.0):
    """The first ERROR status naming one of `texts` once the arm holds and no pre-fault chunk can move it."""
    def status():
        return _first(lambda text: rig.diagnostic(text, "vla3d_inference", Level.ERROR), texts)
    assert rig.wait_for(lambda: status() and rig.held() and rig.pre_fault_chunks_expired(), timeout=timeout), \
        f"no hold / none of {texts}; last: {[s.message for s in rig.diagnostics[-4:]]}"
    return status()


def check_held(rig: FaultRig, *texts: str) -> tuple[str, object]:
    """Held throughout an observation window, no chunk from the faulty period, the reason (one of
    `texts`) logged; returns (the command-topic summary, the log line)."""
    time_to_hold = rig.time_to_hold()
    commands, moving = rig.held_throughout(0.8)
    assert commands >= 5 and moving == 0, f"{moving}/{commands} commands moved"
    assert not rig.chunks_after_fault()

    def log():
        return _first(lambda text: rig.log(text, "vla3d_inference"), texts)
    assert rig.wait_for(log, timeout=3.0), "not logged"
    hold_reason = rig.graph["action"].controller.last_decision.reason
    return f"zero twist within {time_to_hold:.2f} s ({hold_reason})", log()


# mode -> (case, text on /diagnostics and in the log)
ANSWER_FAULTS = {
    "slow": (f"policy server slow ({SLOW_S} s per answer; reply timeout 0.5 s)", "no reply within 0.5 s"),
    "malformed": ("policy server reply is not msgpack", "malformed reply: not a msgpack message (FormatError)"),
    "oversized": ("policy server reply above the 8 MiB cap", "1009 (message too big)"),
}


@pytest.mark.parametrize("mode", list(ANSWER_FAULTS))
def test_spoiled_answers_hold_the_arm_and_the_node_reconnects(make_rig, fault_server, mode):
    case, text = ANSWER_FAULTS[mode]
    server, mode_file = fault_server
    rig = make_rig(server.url)
    rig.start_running()
    rig.inject(None)
    mode_file.write_text(mode)
    try:
        status = wait_hold(rig, text)
        command, log = check_held(rig, text)
    finally:
        mode_file.write_text("")
    assert rig.wait_recovered(), f"{mode}: no recovery"
    assert rig.graph["inference"].runner.policy.connections >= 2   # it reconnected
    conclude(rig, case, diagnostic=status, log=log, command=command, recovered=True)


def test_link_drop_holds_then_reconnects_when_the_link_is_back(make_rig, fault_server):
    server, _ = fault_server
    relay = LinkRelay(server.port)
    try:
        rig = make_rig(f"ws://127.0.0.1:{relay.port}")
        rig.start_running()
        rig.inject(None)
        relay.cut()
        status = wait_hold(rig, "no reply within 0.5 s")
        command, log = check_held(rig, "no reply within 0.5 s")
        assert rig.wait_for(lambda: rig.diagnostic("cannot connect: TimeoutError", "vla3d_inference", Level.ERROR)), \
            "no reconnection attempts reported"
        relay.restore()
        assert rig.wait_recovered(timeout=15.0), "no recovery once the link was back"
    finally:
        relay.close()
    conclude(rig, "link to the policy server cut silently (no bytes either way), then back", diagnostic=status,
             log=log, command=command, recovered=True)


def test_server_killed_mid_run_holds_then_reconnects_when_it_is_back(make_rig, served_checkpoint):
    server = start_server(served_checkpoint)
    try:
        rig = make_rig(server.url)
        rig.start_running()
        rig.inject(None)
        server.kill()
        # The kernel closes the dead server's socket: normally "connection lost" at once; on a loaded
        # machine the reply timeout can fire first.
        status = wait_hold(rig, "connection lost", "no reply within")
        command, log = check_held(rig, "connection lost", "no reply within")
        assert rig.wait_for(lambda: rig.diagnostic("cannot connect: ConnectionRefusedError", "vla3d_inference",
                                                   Level.ERROR)), "no reconnection attempts reported"
        server = start_server(served_checkpoint, server.port)
        assert rig.wait_recovered(timeout=15.0), "no recovery once the server was back"
    finally:
        server.stop()
    conclude(rig, "policy server killed mid-run (SIGKILL), restarted on the same port", diagnostic=status, log=log,
             command=command, recovered=True)


def test_server_down_at_start_holds_then_starts_when_it_is_up(make_rig, served_checkpoint):
    port = free_port()
    rig = make_rig(f"ws://127.0.0.1:{port}")    # graph.start() does not raise: the node retries
    inference = rig.graph["inference"]
    assert inference.retrying and inference.runner is None
    rig.start_recording()
    rig.arm()
    rig.inject(None)
    text = "cannot use policy server"
    assert rig.wait_for(lambda: rig.diagnostic(text, "vla3d_inference", Level.ERROR) and rig.held())
    status = rig.diagnostic(text, "vla3d_inference", Level.ERROR)
    assert "ConnectionRefusedError" in status.message and "configure retried in" in status.message
    commands, moving = rig.held_throughout(0.4)
    assert commands >= 5 and moving == 0 and not rig.chunks
    log = rig.log_since_start(text, "vla3d_inference")
    assert log is not None
    hold_reason = rig.graph["action"].controller.last_decision.reason
    server = start_server(served_checkpoint, port)
    try:
        assert rig.wait_recovered(timeout=20.0), "the node never started once the server was up"
    finally:
        server.stop()
    conclude(rig, "policy server down at start", diagnostic=status, log=log,
             command=f"zero twist ({hold_reason}); configure + activate retried with backoff, moving once the "
                     "server is up", recovered=True)


def test_a_server_whose_policy_does_not_fit_the_config_fails_configure(ros_context, fault_server):
    server, _ = fault_server
    config = fault_config(policy=server.url, joint_names=[f"joint{i}" for i in range(1, 7)])
    graph = build_graph(config, roles=("camera_sync", "inference"), context=ros_context)
    try:
        with pytest.raises(RuntimeError, match="cannot use policy server ws://.*: the server's policy does not fit "
                                               "this robot's config: the server's policy takes a state of 15 .*"
                                               "the config has 6 joints"):
            graph.start()
        assert not graph["inference"].retrying   # a mismatch is not retried: the config must change
    finally:
        graph.destroy()
