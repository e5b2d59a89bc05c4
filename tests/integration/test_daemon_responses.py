"""
The responses the real daemon makes itself, and what it adds to relayed ones, over HTTP/1.1 on loopback (standard
reason phrases, no Server header of the proxy's own; the upstream's phrase and Server relayed as they are): read as
raw bytes, so that the status line and every header line are seen exactly as sent.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from urllib.parse import quote

from tests.integration.conftest import Proxy

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


def status_line(response: bytes) -> bytes:
    return response.partition(b"\r\n")[0]


def test_header_line_over_the_limit_is_431_with_its_phrase_and_no_server(proxy_factory: Callable[..., Proxy]) -> None:
    """A header line over --max-header-line is answered "431 Request Header Fields Too Large", naming no server."""
    proxy = proxy_factory("--max-header-line", "100")
    response = get(proxy.port, b"/echo", b"X-Long: " + b"a" * 100 + b"\r\n")
    assert status_line(response) == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert server_lines(response) == []
    assert response.endswith(b"\r\n\r\n431 Request Header Fields Too Large\n")


def test_own_responses(proxy_factory: Callable[..., Proxy]) -> None:
    """The daemon's own responses (refused heads, an invalid upstream response) have the standard reason phrase and
    carry no Server header."""
    proxy = proxy_factory("--max-request-line", "1000", "--max-header-line", "100")
    invalid = raw_response(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    responses = {
        400: exchange(proxy.port, b"GET /r\r\n"),
        414: exchange(proxy.port, b"GET /" + b"a" * 1000 + b" HTTP/1.1\r\n"),
        431: get(proxy.port, b"/echo", b"X: " + b"a" * 100 + b"\r\n"),
        502: get(proxy.port, invalid),
    }
    phrases = {400: b"Bad Request", 414: b"URI Too Long", 431: b"Request Header Fields Too Large", 502: b"Bad Gateway"}
    for status, response in responses.items():
        assert status_line(response) == b"HTTP/1.1 %d %s" % (status, phrases[status]), response[:80]
        assert server_lines(response) == [], response[:200]


def test_relayed_responses_keep_the_upstreams_phrase_and_server_or_none(proxy: Proxy) -> None:
    """A relayed response has the origin's reason phrase and Server header as they were sent, and no Server header
    when the origin sent none."""
    named = get(proxy.port, raw_response(b"HTTP/1.1 200 Fine\r\nServer: origin/1.0 (x)\r\nContent-Length: 2\r\n\r\nok"))
    assert status_line(named) == b"HTTP/1.1 200 Fine" and named.endswith(b"\r\n\r\nok")
    assert server_lines(named) == [b"Server: origin/1.0 (x)"]
    unnamed = get(proxy.port, b"/echo")  # (the origin names no server)
    assert unnamed.startswith(b"HTTP/1.1 200 ")
    assert server_lines(unnamed) == []
