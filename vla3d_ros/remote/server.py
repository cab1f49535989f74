"""`PolicyServer`: a policy's `infer(Observation) -> dict` behind openpi's websocket protocol.

One thread per connection (websockets' threaded server); `infer` calls are serialised by a lock,
since one model serves them all. Per connection: the metadata frame, then request -> reply until
the client leaves. A request that cannot be decoded or that the policy fails on is answered with a
text frame naming the error (openpi's convention) and the connection stays usable; a request above
`max_request_bytes` closes the connection (websockets' `max_size`, close code 1009).

Exposure (docs/security.md): loopback by default. Any other address needs `allow_remote=True`
and a token, which every client must present as openpi's client does (`Authorization: Api-Key
<token>`); a missing or wrong token is refused with HTTP 401 before the websocket opens. The
token is compared in constant time. Error texts are one line (no tracebacks, no file paths).
"""
from __future__ import annotations

import hmac
import http
import ipaddress
import logging
import os
import re
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from vla3d_ros.remote.protocol import (MAX_REQUEST_BYTES, WireError, observation_from_wire, packb,
                                       reply_to_wire, unpackb)

_LOG = logging.getLogger("vla3d.serve")
TOKEN_SCHEME = "Api-Key"     # openpi_client.WebsocketClientPolicy(api_key=...) sends this scheme


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, "localhost")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, allow_remote: bool, token: str | None) -> None:
    """ValueError unless `host` is loopback, or remote access is both asked for and token-protected."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise ValueError(f"--host {host} would expose the policy beyond this machine; pass --allow-remote "
                         "(and a token) to mean it")
    if not token:
        raise ValueError(f"--host {host} needs a shared token (--token-file or $VLA3D_POLICY_TOKEN): "
                         "anyone who reaches the port could otherwise query the policy")


class PolicyServer:
    """Serves `policy.infer` on ws://host:port (port 0: the OS picks one; see `port` after `start`).

    Args:
        policy: any object with `infer(Observation) -> dict` (e.g. `model.policy.NumpyPolicy`).
        metadata: the dict sent on connect (`protocol.server_metadata`).
        token: required from every client when set (always required off loopback).
        allow_remote: permit a non-loopback `host` (with a token).
        max_request_bytes: larger requests close the connection.
        clock: seconds, for the reported server-side inference time.
    """

    def __init__(self, policy, metadata: Mapping, *, host: str = "127.0.0.1", port: int = 8000,
                 token: str | None = None, allow_remote: bool = False,
                 max_request_bytes: int = MAX_REQUEST_BYTES, clock: Callable[[], float] = time.perf_counter) -> None:
        check_exposure(host, allow_remote, token)
        self.policy = policy
        self.metadata = dict(metadata, max_request_bytes=max_request_bytes)
        self.host, self.port = host, port
        self.token = token
        self.max_request_bytes = max_request_bytes
        self.clock = clock
        self.errors = 0                  # requests answered with an error text
        self._lock = threading.Lock()
        self._server: Server | None = None

    def start(self) -> int:
        """Bind and listen (not yet serving); returns the bound port."""
        self._server = serve(self._handle, self.host, self.port, compression=None, max_size=self.max_request_bytes,
                             process_request=self._authorize if self.token else None)
        self.port = self._server.socket.getsockname()[1]
        return self.port

    def serve_forever(self) -> None:
        """Serve until `shutdown` (from another thread) or KeyboardInterrupt."""
        if self._server is None:
            self.start()
        self._server.serve_forever()

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def _authorize(self, connection: ServerConnection, request):
        """HTTP 401 unless the request carries `Authorization: Api-Key <token>`."""
        presented = request.headers.get("Authorization", "")
        expected = f"{TOKEN_SCHEME} {self.token}"
        if hmac.compare_digest(presented.encode(), expected.encode()):
            return None
        _LOG.warning("refused %s: missing or wrong token", connection.remote_address)
        return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")

    def answer(self, data: bytes | str) -> bytes | str:
        """The reply frame to one request frame: msgpack bytes, or a one-line error text."""
        try:
            if isinstance(data, str):
                raise WireError("expected a binary msgpack frame, got a text frame")
            obs = observation_from_wire(unpackb(data))
            with self._lock:
                start = self.clock()
                output = self.policy.infer(obs)
                infer_ms = 1000.0 * (self.clock() - start)
            return packb(reply_to_wire(output, infer_ms))
        except Exception as error:  # noqa: BLE001 - a bad request or a policy fault answers that request only
            self.errors += 1
            return f"{type(error).__name__}: {error}".replace("\n", " ")

    def _handle(self, connection: ServerConnection) -> None:
        client = connection.remote_address   # (not readable once the socket is closed)
        _LOG.info("client %s connected", client)
        try:
            connection.send(packb(self.metadata))
            while True:
                connection.send(self.answer(connection.recv()))
        except ConnectionClosed as closed:
            _LOG.info("client %s left (%s)", client, closed)


class ServerProcess:
    """`vla3d serve ARGS` in a child process (the bench, the tests): `url` once it listens.

    Args:
        args: `vla3d serve` arguments (use `--port 0`: the port is read from its first line).
        timeout: s to wait for the server to listen (it loads and warms up the policy first).
        module: the module run as `python -m` (a test may wrap the command to inject faults).
    """

    def __init__(self, args: list[str], *, timeout: float = 120.0, env: Mapping[str, str] | None = None,
                 module: str = "vla3d_ros.cli") -> None:
        command = [sys.executable, "-m", module] + (["serve"] if module == "vla3d_ros.cli" else []) + list(args)
        # stderr (its log) to a file: an undrained pipe would fill up and block the server.
        self.log = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                        env={**os.environ, **(env or {})})
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline and self.process.poll() is None:
            if selector.select(timeout=0.2):
                line = self.process.stdout.readline()
                match = re.search(r"on (ws://\S+)", line)
                if match:
                    self.url = match.group(1)
                    return
        self.stop()
        raise RuntimeError(f"`vla3d serve` did not start within {timeout} s: {line!r} {self.read_log()[-2000:]}")

    def read_log(self) -> str:
        """What the server wrote to stderr so far."""
        self.log.seek(0)
        return self.log.read()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        """SIGKILL: the server dies mid-whatever, as on a crash or a power cut."""
        self.process.kill()
        self.process.wait(timeout=10)
        self.stop()

    def stop(self) -> None:
        """SIGTERM (SIGKILL if it does not exit within 10 s); idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process.stdout.close()
        self.log.close()
