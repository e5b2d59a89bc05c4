"""
Validation, limits and deadlines through a real ``twistd -n txrevproxy`` on loopback: refused requests never reach
the upstream (a recording listener proves it), and slow-header connections do not starve normal requests.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests._requests import HOST, REFUSED

SOCKET_TIMEOUT = 10.0


class Recorder:
    """
    A listener on 127.0.0.1 that accepts connections and records every byte, never answering.
    """

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.received = b""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                with self._lock:
                    self.received += data

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.close()


def exchange(port: int, raw: bytes) -> bytes:
    """
    Send ``raw`` on a new connection and read until the proxy closes it.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the proxy may answer and close before all of an oversized request is sent
        received = b""
        try:
            while data := sock.recv(65536):
                received += data
        except ConnectionResetError:
            pass
        return received


def test_refused_requests_never_reach_the_upstream(proxy_factory, recorder):
    """Every request of the refusal table gets its status over a real socket, and the upstream gets no byte."""
    proxy = proxy_factory("--max-body-size", "100", upstream=recorder.url)
    wrong = []
    for raw, status in REFUSED:
        response = exchange(proxy.port, raw)
        if not response.startswith(b"HTTP/1.1 %d " % (status,)):
            wrong.append((raw[:60], status, response[:40]))
    assert wrong == []
    assert (recorder.connections, recorder.received) == (0, b"")
    assert any("rejected request from 127.0.0.1: 400" in line for line in proxy.log_lines())


def test_malformed_request_line_is_answered_at_once(proxy_factory: Callable[..., Any], recorder: Recorder) -> None:
    """Over a real socket, a malformed request line with no blank line after it gets 400, Connection: close and the
    connection closed at once (the head deadline is far off), and a request line still open past --max-request-line
    gets 414; the upstream gets no byte."""
    proxy = proxy_factory("--head-timeout", "3600", "--max-request-line", "100", upstream=recorder.url)
    for line in (b"GET /r\r\n", b"GET  /r HTTP/1.1\r\n", b"G@T /r HTTP/1.1\r\n", b"\r\nGET /r HTTP/1.2x\r\n"):
        head, _, body = exchange(proxy.port, line).partition(b"\r\n\r\n")  # (the socket timeout, 10 s, bounds it)
        assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"\r\nConnection: close" in head, line
        assert body == b"400 Bad Request\n"
    assert exchange(proxy.port, b"GET /" + b"a" * 100).startswith(b"HTTP/1.1 414 ")
    assert (recorder.connections, recorder.received) == (0, b"")


def test_chunked_upload_is_reframed(proxy):
    """A chunked upload with extensions and trailers reaches the origin as the same bytes, framed by the proxy."""
    body = b"x" * 70000 + b"y" * 5
    chunks = b"".join(b'%x;ext="v"\r\n%s\r\n' % (len(part), part) for part in (body[:70000], body[70000:]))
    raw = (
        b"POST /echo HTTP/1.1\r\n"
        + HOST
        + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + chunks
        + b"0\r\nX-Trailer: t\r\n\r\n"
    )
    response = exchange(proxy.port, raw)
    assert response.startswith(b"HTTP/1.1 200 ")
    echo = json.loads(response.partition(b"\r\n\r\n")[2])
    assert (echo["body_length"], echo["body_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    names = [name.lower() for name, _ in echo["headers"]]
    assert "transfer-encoding" in names and "x-trailer" not in names


def test_expect_continue_over_a_socket(proxy):
    """Expect: 100-continue is answered with one 100 Continue before the body is sent, then the real response."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(b"PUT /upload HTTP/1.1\r\n" + HOST + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        response = b""
        while b"body_sha256" not in response:
            response += sock.recv(65536)
    assert response.count(b"HTTP/1.1 100") == 0 and response.startswith(b"HTTP/1.1 200 ")


def test_oversized_chunked_upload_is_413_and_aborted_upstream(proxy_factory, origin):
    """A chunked upload crossing the body cap gets 413 and the upstream request is abandoned, not completed."""
    proxy = proxy_factory("--max-body-size", "1k")
    raw = b"POST /upload HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"a" * 1024
    raw += b"\r\n1\r\nb\r\n0\r\n\r\n"
    response = exchange(proxy.port, raw)
    assert response.startswith(b"HTTP/1.1 413 ")
    assert origin.stats()["requests"] == 0


def test_slow_headers_do_not_starve_normal_requests(proxy_factory):
    """300 connections trickling a head hold no one up; each is answered 408 at the head deadline."""
    proxy = proxy_factory("--head-timeout", "3")
    slow = []
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=SOCKET_TIMEOUT)
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
            slow.append(sock)
        for i in range(20):
            connection = proxy.connection(timeout=SOCKET_TIMEOUT)
            connection.request("GET", f"/echo?{i}")
            response = connection.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["target"] == f"/echo?{i}"
            connection.close()
        # The head deadline counts from each connection's first byte: every one ends with a 408, not a hang.
        for sock in slow:
            received = b""
            while data := sock.recv(4096):
                received += data
            assert received.startswith(b"HTTP/1.1 408 ")
    finally:
        for sock in slow:
            sock.close()
    assert proxy.wait_for_log(r"408 request head not complete within 3s")


def test_connection_closed_after_keep_alive_idle(proxy_factory):
    """A keep-alive connection left idle is closed by the proxy after --idle-timeout."""
    proxy = proxy_factory("--idle-timeout", "1")
    connection = proxy.connection(timeout=SOCKET_TIMEOUT)
    connection.request("GET", "/echo")
    assert connection.getresponse().read()
    sock = connection.sock
    assert sock is not None
    assert sock.recv(1) == b""  # EOF from the proxy, well within the socket timeout
