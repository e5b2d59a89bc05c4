"""
WebSocket through the real daemon, with the ``websockets`` library on both ends: the upgrade is relayed, then
messages of every kind and size flow both ways and either side can close; without a ``101`` the connection stays
HTTP; ``--no-upgrade`` drops the upgrade; a TLS listener carries tunnels too; stopping the daemon closes them; a
client that stops reading is aborted after the send timeout.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

from tests._certs import TestCA

TIMEOUT = 20


class WebSocketOrigin:
    """
    A WebSocket server in a thread. ``/echo`` sends back every message; ``/close`` closes at once with code 4000;
    ``/push?n=N`` sends N messages of 64 KiB then waits for the client's close.
    """

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.server = serve(
            self.handle, "127.0.0.1", 0, max_size=None, compression=None, process_request=self.record, ssl=tls
        )
        self.port = self.server.socket.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.headers: list[dict[str, str]] = []
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def record(self, connection: ServerConnection, request: object) -> None:
        self.headers.append({name.lower(): value for name, value in request.headers.raw_items()})  # type: ignore[attr-defined]

    def handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        path = request.path
        if path == "/echo":
            for message in connection:
                connection.send(message)
        elif path == "/close":
            connection.close(4000, "bye from the server")
        elif path.startswith("/push"):
            count = int(path.split("n=")[1])
            for index in range(count):
                connection.send(bytes([index % 256]) * 65536)
            for _ in connection:
                pass

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(TIMEOUT)


@pytest.fixture
def ws_origin() -> Iterator[WebSocketOrigin]:
    origin = WebSocketOrigin()
    yield origin
    origin.close()


def ws_url(proxy: object, path: str) -> str:
    return f"ws://127.0.0.1:{proxy.port}{path}"  # type: ignore[attr-defined]


def test_messages_both_ways(proxy_factory: Callable[..., object], ws_origin: WebSocketOrigin) -> None:
    """Text, binary and many small messages are relayed both ways, and the origin sees the forwarded upgrade."""
    proxy = proxy_factory(upstream=ws_origin.url)
    with connect(ws_url(proxy, "/echo"), open_timeout=TIMEOUT, compression=None) as ws:
        ws.send("hello, tunnel")
        assert ws.recv(TIMEOUT) == "hello, tunnel"
        ws.send(b"\x00\x01\xff binary")
        assert ws.recv(TIMEOUT) == b"\x00\x01\xff binary"
        for index in range(200):
            ws.send(f"message {index}")
        assert [ws.recv(TIMEOUT) for _ in range(200)] == [f"message {index}" for index in range(200)]
    [headers] = ws_origin.headers
    assert headers["upgrade"] == "websocket" and headers["connection"] == "upgrade"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    proxy.wait_for_log(r'"GET /echo HTTP/1\.1" 101 ')  # type: ignore[attr-defined]
    proxy.wait_for_log(r"tunnel 127\.0\.0\.1 /echo closed: .* bytes up, .* bytes down")  # type: ignore[attr-defined]


def test_large_messages(proxy_factory: Callable[..., object], ws_origin: WebSocketOrigin) -> None:
    """A message of several MiB goes up and comes back whole."""
    proxy = proxy_factory(upstream=ws_origin.url)
    payload = bytes(range(256)) * (8 * 4096)  # 8 MiB
    with connect(ws_url(proxy, "/echo"), open_timeout=TIMEOUT, max_size=None, compression=None) as ws:
        ws.send(payload)
        assert ws.recv(TIMEOUT) == payload


def test_many_messages_down(proxy_factory: Callable[..., object], ws_origin: WebSocketOrigin) -> None:
    """A server pushing 32 MiB in 64 KiB messages gets them all to the client, in order."""
    proxy = proxy_factory(upstream=ws_origin.url)
    with connect(ws_url(proxy, "/push?n=512"), open_timeout=TIMEOUT, max_size=None, compression=None) as ws:
        for index in range(512):
            assert ws.recv(TIMEOUT) == bytes([index % 256]) * 65536


def test_server_closes(proxy_factory: Callable[..., object], ws_origin: WebSocketOrigin) -> None:
    """A close started by the server reaches the client with its code and reason."""
    proxy = proxy_factory(upstream=ws_origin.url)
    with connect(ws_url(proxy, "/close"), open_timeout=TIMEOUT) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(TIMEOUT)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "bye from the server")  # type: ignore[union-attr]


def test_client_closes(proxy_factory: Callable[..., object], ws_origin: WebSocketOrigin) -> None:
    """A close started by the client completes through the proxy, which then closes both connections."""
    proxy = proxy_factory(upstream=ws_origin.url)
    with connect(ws_url(proxy, "/echo"), open_timeout=TIMEOUT) as ws:
        ws.send("before closing")
        assert ws.recv(TIMEOUT) == "before closing"
        ws.close(1000, "done")
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000
    proxy.wait_for_log(r"tunnel 127\.0\.0\.1 /echo closed")  # type: ignore[attr-defined]


def test_no_101_stays_http(proxy_factory: Callable[..., object], origin: object) -> None:
    """An upstream that answers an upgrade request with a normal response keeps the connection HTTP."""
    proxy = proxy_factory()
    connection = proxy.connection()  # type: ignore[attr-defined]
    headers = {"Connection": "Upgrade", "Upgrade": "websocket"}
    connection.request("GET", "/echo", headers=headers)
    response = connection.getresponse()
    assert response.status == 200 and b'"upgrade", "websocket"' in response.read().lower()
    connection.request("GET", "/echo")  # the same connection carries the next request
    assert connection.getresponse().status == 200


def test_upgrades_off(proxy_factory: Callable[..., object], ws_origin: WebSocketOrigin) -> None:
    """With --no-upgrade the Upgrade header is not forwarded: the WebSocket server refuses the plain request."""
    proxy = proxy_factory("--no-upgrade", upstream=ws_origin.url)
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(proxy, "/echo"), open_timeout=TIMEOUT)
    assert refused.value.response.status_code == 426
    assert "upgrade" not in ws_origin.headers[0]


def test_wss_through_a_tls_listener(
    proxy_factory: Callable[..., object], ws_origin: WebSocketOrigin, tmp_path: Path
) -> None:
    """Over a TLS listener (wss://), a tunnel carries a large message up and 32 MiB down, in order."""
    ca = TestCA(tmp_path / "ca")
    leaf = ca.issue("localhost")
    listen = f"ssl:0:interface=127.0.0.1:privateKey={leaf.key}:certKey={leaf.cert}"
    proxy = proxy_factory("--listen", listen, upstream=ws_origin.url)
    port = int(proxy.wait_for_log(r"listening on https://127\.0\.0\.1:(\d+) \(ssl:").group(1))  # type: ignore[attr-defined]
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    payload = bytes(range(256)) * (4 * 4096)  # 4 MiB
    options = {"open_timeout": TIMEOUT, "max_size": None, "compression": None, "ssl": context}
    with connect(f"wss://localhost:{port}/echo", **options) as ws:  # type: ignore[arg-type]
        ws.send(payload)
        assert ws.recv(TIMEOUT) == payload
    with connect(f"wss://localhost:{port}/push?n=512", **options) as ws:  # type: ignore[arg-type]
        for index in range(512):
            assert ws.recv(TIMEOUT) == bytes([index % 256]) * 65536


def test_stopping_closes_tunnels(proxy_factory: Callable[..., object], ws_origin: WebSocketOrigin) -> None:
    """Stopping the daemon (SIGTERM) closes an open tunnel on both sides, with a log line saying why."""
    proxy = proxy_factory(upstream=ws_origin.url)
    with connect(ws_url(proxy, "/echo"), open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        ws.send("still there?")
        assert ws.recv(TIMEOUT) == "still there?"
        proxy.process.terminate()  # type: ignore[attr-defined]
        with pytest.raises(ConnectionClosed):
            ws.recv(TIMEOUT)
    proxy.wait_for_log(r"tunnel 127\.0\.0\.1 /echo closed: the proxy is shutting down")  # type: ignore[attr-defined]


def test_https_upstream(proxy_factory: Callable[..., object], tmp_path: Path) -> None:
    """A WebSocket server behind TLS (an https:// upstream, verified) is tunnelled to, both ways, large messages too."""
    ca = TestCA(tmp_path / "ca")
    leaf = ca.issue("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(leaf.cert), str(leaf.key))
    origin = WebSocketOrigin(tls=context)
    try:
        proxy = proxy_factory("--upstream-ca", str(ca.ca_file), upstream=origin.url)
        payload = bytes(range(256)) * (4 * 4096)  # 4 MiB
        with connect(ws_url(proxy, "/echo"), open_timeout=TIMEOUT, max_size=None, compression=None) as ws:
            ws.send("over TLS")
            assert ws.recv(TIMEOUT) == "over TLS"
            ws.send(payload)
            assert ws.recv(TIMEOUT) == payload
    finally:
        origin.close()


def test_a_client_that_stops_reading_is_aborted_after_the_send_timeout(
    proxy_factory: Callable[..., object], ws_origin: WebSocketOrigin
) -> None:
    """A tunnel client that reads nothing while the server pushes has both connections aborted once its buffer
    has been full for --send-timeout, though --tunnel-idle-timeout is far off."""
    proxy = proxy_factory("--send-timeout", "1", "--tunnel-idle-timeout", "300", upstream=ws_origin.url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.connect(("127.0.0.1", proxy.port))  # type: ignore[attr-defined]
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /push?n=512 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert sock.recv(12) == b"HTTP/1.1 101"  # then nothing more is read
        proxy.wait_for_log(r"tunnel 127\.0\.0\.1 /push\?n=512 client read nothing for 1s: closed", TIMEOUT)  # type: ignore[attr-defined]
    finally:
        sock.close()
