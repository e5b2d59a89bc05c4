"""
The responses the real daemon makes itself, and what it adds to relayed ones, over HTTP/1.1 on loopback: read as raw
bytes, so that the status line and every header line are seen exactly as sent.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from urllib.parse import quote

from conftest import Proxy

SOCKET_TIMEOUT = 10.0


def exchange(port: int, raw: bytes) -> bytes:
    """
    Send ``raw`` on a new connection and read until the proxy closes it (the socket timeout bounds the wait).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(raw)
        received = b""
        try:
            while data := sock.recv(65536):
                received += data
        except ConnectionResetError:
            pass
        return received


def get(port: int, target: bytes, *headers: bytes) -> bytes:
    return exchange(port, b"GET %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n" % (target, b"".join(headers)))


def raw_response(data: bytes) -> bytes:
    """
    The target that has the origin answer ``data``, byte for byte.
    """
    return b"/raw?data=" + quote(data, safe="").encode("ascii")


def server_lines(response: bytes) -> list[bytes]:
    head = response.partition(b"\r\n\r\n")[0]
    return [line for line in head.split(b"\r\n")[1:] if line.lower().startswith(b"server:")]


def test_own_responses_name_no_server(proxy_factory: Callable[..., Proxy]) -> None:
    """The daemon's own responses (refused heads, an invalid upstream response) carry no Server header."""
    proxy = proxy_factory("--max-request-line", "1000", "--max-header-line", "100")
    invalid = raw_response(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    responses = {
        400: exchange(proxy.port, b"GET /r\r\n"),
        414: exchange(proxy.port, b"GET /" + b"a" * 1000 + b" HTTP/1.1\r\n"),
        431: get(proxy.port, b"/echo", b"X: " + b"a" * 100 + b"\r\n"),
        502: get(proxy.port, invalid),
    }
    for status, response in responses.items():
        assert response.startswith(b"HTTP/1.1 %d " % (status,)), response[:80]
        assert server_lines(response) == [], response[:200]


def test_relayed_responses_keep_the_upstreams_server_or_none(proxy: Proxy) -> None:
    """A relayed response has the origin's Server header as it was sent, and none when the origin sent none."""
    named = get(proxy.port, raw_response(b"HTTP/1.1 200 OK\r\nServer: origin/1.0 (x)\r\nContent-Length: 2\r\n\r\nok"))
    assert named.startswith(b"HTTP/1.1 200 ") and named.endswith(b"\r\n\r\nok")
    assert server_lines(named) == [b"Server: origin/1.0 (x)"]
    unnamed = get(proxy.port, b"/echo")  # (the origin names no server)
    assert unnamed.startswith(b"HTTP/1.1 200 ")
    assert server_lines(unnamed) == []
