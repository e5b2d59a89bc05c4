"""
Loopback tests of the real ``twistd -n txrevproxy`` daemon in front of the fake origin (``origin.py``).

The client side is only the standard library: ``http.client``, or a raw ``socket`` where the framing has to be seen
byte by byte. No test sleeps; every wait is bounded by a timeout.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import re
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import Origin, Proxy

    RunDaemon = Callable[..., subprocess.CompletedProcess[str]]

KiB = 1024
MiB = 1024 * KiB
_BLOCK = bytes(range(256)) * 256  # origin.py's /bytes body: byte i is i % 256


def pattern(n: int) -> bytes:
    """
    The body origin.py's ``/bytes?n=N`` answers.
    """
    return (_BLOCK * (n // len(_BLOCK) + 1))[:n]


def pattern_sha256(n: int) -> str:
    digest = hashlib.sha256()
    whole, rest = divmod(n, len(_BLOCK))
    for _ in range(whole):
        digest.update(_BLOCK)
    digest.update(_BLOCK[:rest])
    return digest.hexdigest()


# -- a small strict HTTP/1.1 response reader for raw sockets ----------------------------------------------------------


class Incomplete(Exception):
    """
    The bytes ended before the response did.
    """


def _readline(f: io.BufferedIOBase) -> bytes:
    line = f.readline(65537)
    if not line.endswith(b"\r\n"):
        raise Incomplete(f"line cut short: {line!r}")
    return line[:-2]


def read_head(f: io.BufferedIOBase) -> tuple[int, list[tuple[str, str]]]:
    status_line = _readline(f)
    version, _, rest = status_line.partition(b" ")
    assert version == b"HTTP/1.1", status_line
    status = int(rest[:3])
    headers = []
    while True:
        line = _readline(f)
        if not line:
            return status, headers
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name, value.strip(" \t")))


def header_values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for n, v in headers if n.lower() == name.lower()]


def iter_body(f: io.BufferedIOBase, status: int, headers: list[tuple[str, str]], head: bool = False) -> Iterator[bytes]:
    """
    The body's pieces, framed as RFC 9112 section 6.3 says; raises :class:`Incomplete` if the bytes end first.
    """
    if head or status in (204, 304) or 100 <= status < 200:
        return
    codings = [t.strip().lower() for v in header_values(headers, "Transfer-Encoding") for t in v.split(",")]
    if codings:
        assert codings == ["chunked"], codings
        while True:
            size = int(_readline(f).split(b";")[0], 16)
            if size == 0:
                while _readline(f):  # trailer section
                    pass
                return
            data = f.read(size)
            if len(data) != size:
                raise Incomplete(f"chunk of {size} cut after {len(data)} bytes")
            yield data
            if f.read(2) != b"\r\n":
                raise Incomplete("chunk not followed by CRLF")
    lengths = header_values(headers, "Content-Length")
    if lengths:
        remaining = int(lengths[0])
        while remaining:
            data = f.read(min(remaining, 256 * KiB))
            if not data:
                raise Incomplete(f"body cut short with {remaining} bytes to go")
            remaining -= len(data)
            yield data
        return
    while data := f.read(256 * KiB):  # delimited by the end of the connection
        yield data


def read_response(f: io.BufferedIOBase, head: bool = False) -> tuple[int, list[tuple[str, str]], bytes]:
    status, headers = read_head(f)
    return status, headers, b"".join(iter_body(f, status, headers, head))


_sockets: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    """
    Close the raw sockets a test opened with :func:`connect`.
    """
    yield
    while _sockets:
        _sockets.pop().close()


def connect(port: int, rcvbuf: int | None = None, sndbuf: int | None = None, timeout: float = 10.0) -> socket.socket:
    """
    A raw client socket connected to ``port`` on 127.0.0.1, closed at teardown.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    _sockets.append(sock)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if sndbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """
    Every byte until the peer closes or resets the connection (fails if it stays open past the socket's timeout).
    """
    received = []
    while True:
        try:
            data = sock.recv(64 * KiB)
        except ConnectionResetError:
            break
        except TimeoutError:
            raise AssertionError(f"the connection stayed open; received so far: {b''.join(received)!r}") from None
        if not data:
            break
        received.append(data)
    return b"".join(received)


def is_complete_response(data: bytes) -> bool:
    f = io.BufferedReader(io.BytesIO(data))  # type: ignore[arg-type]
    try:
        read_response(f)
    except Incomplete:
        return False
    return True


# -- http.client helpers --------------------------------------------------------------------------------------------


def send(
    connection: http.client.HTTPConnection,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
) -> http.client.HTTPResponse:
    """
    Send one request with ``headers`` in order, repeats kept (a ``Host`` among them replaces the automatic one).
    """
    skip_host = any(name.lower() == "host" for name, _ in headers)
    connection.putrequest(method, target, skip_host=skip_host, skip_accept_encoding=True)
    for name, value in headers:
        connection.putheader(name, value)
    if body is not None:
        connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    return connection.getresponse()


def echo(proxy: Proxy, target: str = "/echo", headers: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """
    What the origin received for one GET sent through ``proxy``.
    """
    connection = proxy.connection()
    try:
        response = send(connection, "GET", target, headers)
        body = response.read()
        assert response.status == 200, (response.status, body)
        return json.loads(body)
    finally:
        connection.close()


def upstream_values(seen: dict[str, Any], name: str) -> list[str]:
    return [v for n, v in seen["headers"] if n.lower() == name.lower()]


def list_values(values: list[str]) -> list[str]:
    """
    The elements of a comma-separated list header, over all its lines.
    """
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def forwarded_elements(values: list[str]) -> list[dict[str, str]]:
    """
    The ``Forwarded`` (RFC 7239) elements as dicts with lower-cased parameter names and unquoted values.
    """
    elements = []
    for element in list_values(values):
        pairs = {}
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            if value.startswith('"') and value.endswith('"'):
                value = value[1:-1].replace('\\"', '"')
            pairs[name.lower()] = value
        elements.append(pairs)
    return elements


# -- headers ----------------------------------------------------------------------------------------------------------


def test_repeated_request_headers_arrive_upstream_in_order(proxy: Proxy) -> None:
    """Two Cookie lines and two X-Multi lines reach the origin as separate lines, each name's values in order."""
    seen = echo(proxy, headers=[("Cookie", "a=1"), ("X-Multi", "one"), ("Cookie", "b=2"), ("X-Multi", "two")])
    assert upstream_values(seen, "Cookie") == ["a=1", "b=2"]
    assert upstream_values(seen, "X-Multi") == ["one", "two"]


def test_repeated_response_set_cookie_reach_the_client(proxy: Proxy) -> None:
    """Two Set-Cookie lines from the origin reach the client as two lines, in order."""
    connection = proxy.connection()
    response = send(connection, "GET", "/response-headers")
    assert response.read() == b"ok\n"
    assert response.headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]


def test_request_hop_by_hop_headers_are_not_forwarded(proxy: Proxy) -> None:
    """Connection and what it names, Keep-Alive, TE, Upgrade, Proxy-* are not forwarded; end-to-end headers are."""
    seen = echo(
        proxy,
        headers=[
            ("Connection", "X-Hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Upgrade", "foo"),
            ("Proxy-Authorization", "Basic eDp5"),
            ("Proxy-Connection", "keep-alive"),
            ("X-End-To-End", "kept"),
            ("Authorization", "Bearer t"),
        ],
    )
    names = {name.lower() for name, _ in seen["headers"]}
    for hop in ("x-hop", "keep-alive", "te", "upgrade", "proxy-authorization", "proxy-connection"):
        assert hop not in names, seen["headers"]
    assert "x-hop" not in [t.lower() for t in list_values(upstream_values(seen, "Connection"))]
    assert upstream_values(seen, "X-End-To-End") == ["kept"]
    assert upstream_values(seen, "Authorization") == ["Bearer t"]


def test_response_hop_by_hop_headers_are_not_returned(proxy: Proxy) -> None:
    """The origin's Connection-named header, Keep-Alive, Proxy-Authenticate, Trailer, Upgrade are not relayed."""
    sock = connect(proxy.port)
    sock.sendall(f"GET /response-headers HTTP/1.1\r\nHost: {proxy.host}\r\n\r\n".encode())
    status, headers, body = read_response(sock.makefile("rb"))
    assert (status, body) == (200, b"ok\n")
    names = {name.lower() for name, _ in headers}
    for hop in ("x-hop", "keep-alive", "proxy-authenticate", "trailer", "upgrade"):
        assert hop not in names, headers
    assert "x-hop" not in [t.lower() for t in list_values(header_values(headers, "Connection"))]
    assert header_values(headers, "X-End-To-End") == ["kept"]
    assert header_values(headers, "Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]


def test_forwarding_headers_describe_the_client(proxy: Proxy, origin: Origin) -> None:
    """The origin gets X-Forwarded-*, a Forwarded element, a Via naming txrevproxy, and its own address as Host."""
    seen = echo(proxy, headers=[("Host", "app.example:8080")])
    assert upstream_values(seen, "X-Forwarded-For") == ["127.0.0.1"]
    assert upstream_values(seen, "X-Forwarded-Proto") == ["http"]
    assert upstream_values(seen, "X-Forwarded-Host") == ["app.example:8080"]
    assert forwarded_elements(upstream_values(seen, "Forwarded")) == [
        {"for": "127.0.0.1", "proto": "http", "host": "app.example:8080"}
    ]
    via = upstream_values(seen, "Via")
    assert len(via) == 1 and "txrevproxy" in via[0], via
    assert upstream_values(seen, "Host") == [f"127.0.0.1:{origin.port}"]


_SPOOFED = [
    ("X-Forwarded-For", "6.6.6.6"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "evil.example"),
    ("Forwarded", "for=6.6.6.6;proto=https"),
]


def test_spoofed_forwarding_headers_from_an_untrusted_client_are_replaced(proxy: Proxy) -> None:
    """Without --trusted-proxy, a client's X-Forwarded-*/Forwarded headers are replaced, not appended to."""
    seen = echo(proxy, headers=[("Host", "app.example"), *_SPOOFED])
    assert upstream_values(seen, "X-Forwarded-For") == ["127.0.0.1"]
    assert upstream_values(seen, "X-Forwarded-Proto") == ["http"]
    assert upstream_values(seen, "X-Forwarded-Host") == ["app.example"]
    assert forwarded_elements(upstream_values(seen, "Forwarded")) == [
        {"for": "127.0.0.1", "proto": "http", "host": "app.example"}
    ]


def test_forwarding_headers_from_a_trusted_proxy_are_appended_to(proxy_factory: Callable[..., Proxy]) -> None:
    """With --trusted-proxy 127.0.0.0/8, the client's X-Forwarded-For and Forwarded get the client address appended."""
    proxy = proxy_factory("--trusted-proxy", "127.0.0.0/8")
    seen = echo(proxy, headers=[("Host", "app.example"), *_SPOOFED])
    assert list_values(upstream_values(seen, "X-Forwarded-For")) == ["6.6.6.6", "127.0.0.1"]
    elements = forwarded_elements(upstream_values(seen, "Forwarded"))
    assert [e.get("for") for e in elements] == ["6.6.6.6", "127.0.0.1"], elements


def test_preserve_host_sends_the_clients_host(proxy_factory: Callable[..., Proxy]) -> None:
    """With --preserve-host the origin gets the client's Host header instead of its own address."""
    proxy = proxy_factory("--preserve-host")
    seen = echo(proxy, headers=[("Host", "app.example:8080")])
    assert upstream_values(seen, "Host") == ["app.example:8080"]


def test_request_target_is_forwarded_byte_for_byte(proxy: Proxy) -> None:
    """The request target, with %2F in the path and +, %2F, %20 in the query, reaches the origin unchanged."""
    target = "/echo/a%2Fb/c%20d/../e;p=1?q=a+b&path=%2Fetc%2Fpasswd&s=%20x%20&plus=%2B&empty=&flag"
    seen = echo(proxy, target)
    assert seen["target"] == target


# -- bodies -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_large_download_arrives_intact(proxy: Proxy, chunked: bool) -> None:
    """A 10 MiB origin body (Content-Length or chunked) reaches the client with the same sha256."""
    n = 10 * MiB
    connection = proxy.connection()
    response = send(connection, "GET", f"/bytes?n={n}" + ("&chunked=1" if chunked else ""))
    assert response.status == 200
    body = response.read()
    assert len(body) == n
    assert hashlib.sha256(body).hexdigest() == pattern_sha256(n)


def test_large_content_length_upload_arrives_intact(proxy: Proxy) -> None:
    """A 10 MiB request body with Content-Length reaches the origin with the same length and sha256."""
    body = pattern(10 * MiB)[::-1]
    connection = proxy.connection()
    response = send(connection, "POST", "/upload", [("Content-Type", "application/octet-stream")], body=body)
    assert response.status == 200
    assert json.loads(response.read()) == {"body_length": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}


def test_large_chunked_upload_arrives_intact(proxy: Proxy) -> None:
    """A 10 MiB chunked request body (chunks of uneven sizes) reaches the origin with the same length and sha256."""
    body = pattern(10 * MiB)[::-1]
    sock = connect(proxy.port, timeout=30)
    sock.sendall(f"POST /upload HTTP/1.1\r\nHost: {proxy.host}\r\nTransfer-Encoding: chunked\r\n\r\n".encode("ascii"))
    sizes = [1, 7, 4096, 65536, 100_000, 1 * MiB]
    offset, i = 0, 0
    while offset < len(body):
        piece = body[offset : offset + sizes[i % len(sizes)]]
        sock.sendall(b"%x;ext=1\r\n" % len(piece) + piece + b"\r\n")
        offset += len(piece)
        i += 1
    sock.sendall(b"0\r\n\r\n")
    status, _, answer = read_response(sock.makefile("rb"))
    assert status == 200, answer
    assert json.loads(answer) == {"body_length": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}


# -- backpressure -----------------------------------------------------------------------------------------------------


def test_slow_client_pauses_the_origin_writer(proxy: Proxy, origin: Origin) -> None:
    """A client that stops reading a 64 MiB download stalls the origin's writer early; resuming completes it."""
    n = 64 * MiB
    sock = connect(proxy.port, rcvbuf=64 * KiB, timeout=30)
    sock.sendall(f"GET /bytes?n={n}&sndbuf=65536 HTTP/1.1\r\nHost: {proxy.host}\r\n\r\n".encode("ascii"))
    f = sock.makefile("rb")
    status, headers = read_head(f)
    assert status == 200
    digest = hashlib.sha256()
    received = 0
    stalled_at = None
    for piece in iter_body(f, status, headers):
        digest.update(piece)
        received += len(piece)
        if stalled_at is None and received >= 1 * MiB:
            stats = origin.stats(settle=1, timeout=20)
            assert not stats["timed_out"], "the origin writer never stopped making progress"
            stalled_at = stats["bytes_written"]
    assert stalled_at is not None
    assert stalled_at < n // 2, f"the origin wrote {stalled_at} bytes while the client had read {1 * MiB}"
    assert received == n
    assert digest.hexdigest() == pattern_sha256(n)


def test_stalled_origin_pauses_the_uploading_client(proxy: Proxy) -> None:
    """A 64 MiB upload to an origin that stops reading stalls the client's send well before 16 MiB have gone."""
    n = 64 * MiB
    sock = connect(proxy.port, sndbuf=64 * KiB, timeout=3)
    sock.sendall(f"POST /stall-upload HTTP/1.1\r\nHost: {proxy.host}\r\nContent-Length: {n}\r\n\r\n".encode("ascii"))
    sent = 0
    with pytest.raises(socket.timeout):
        while sent < n:
            sent += sock.send(_BLOCK)
    assert sent < 16 * MiB, f"the proxy accepted {sent} bytes of the upload"


# -- upstream failures ------------------------------------------------------------------------------------------------


def test_truncated_content_length_response_is_not_completed(proxy: Proxy) -> None:
    """An origin response cut short of its Content-Length reaches the client as a closed connection with fewer bytes."""
    sock = connect(proxy.port)
    sock.sendall(f"GET /truncate?declared=1000&send=100 HTTP/1.1\r\nHost: {proxy.host}\r\n\r\n".encode("ascii"))
    data = read_until_closed(sock)
    assert not is_complete_response(data), data
    head, _, body = data.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 200"):
        assert re.search(rb"(?im)^content-length: *1000\r?$", head), head
        assert len(body) < 1000


def test_truncated_chunked_response_is_not_completed(proxy: Proxy) -> None:
    """An origin chunked response cut before its last chunk reaches the client without the terminating 0 chunk."""
    sock = connect(proxy.port)
    sock.sendall(f"GET /truncate?chunked=1 HTTP/1.1\r\nHost: {proxy.host}\r\n\r\n".encode("ascii"))
    data = read_until_closed(sock)
    assert not is_complete_response(data), data
    assert b"0\r\n\r\n" not in data.partition(b"\r\n\r\n")[2], data


def test_unreachable_upstream_answers_502_and_logs_the_cause(proxy_factory: Callable[..., Proxy]) -> None:
    """A refused upstream connection answers 502 with a short text/plain body and logs why."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    proxy = proxy_factory(upstream=f"http://127.0.0.1:{port}")
    connection = proxy.connection()
    response = send(connection, "GET", "/echo")
    body = response.read()
    assert response.status == 502
    assert response.headers["Content-Type"].startswith("text/plain")
    assert 0 < len(body) < 512, body
    proxy.wait_for_log(r"(?i)refused")


def test_upstream_that_never_answers_gets_504(proxy_factory: Callable[..., Proxy]) -> None:
    """With --response-timeout 0.5, an origin that never starts its response gets the client a 504, logged."""
    proxy = proxy_factory("--response-timeout", "0.5")
    connection = proxy.connection(timeout=15)
    response = send(connection, "GET", "/hang")
    body = response.read()
    assert response.status == 504
    assert response.headers["Content-Type"].startswith("text/plain")
    assert 0 < len(body) < 512, body
    proxy.wait_for_log(r"(?i)504|time(d)? ?out")


# -- connection handling ----------------------------------------------------------------------------------------------


def test_keep_alive_client_reuses_one_upstream_connection(proxy: Proxy, origin: Origin) -> None:
    """20 sequential requests on one client connection open at most 2 upstream connections."""
    before = origin.stats()["accepted"]
    connection = proxy.connection()
    for i in range(20):
        response = send(connection, "GET", f"/echo/{i}")
        assert json.loads(response.read())["target"] == f"/echo/{i}"
    connection.close()
    opened = origin.stats()["accepted"] - before - 1  # minus the second /stats connection
    assert 1 <= opened <= 2


def test_separate_client_connections_share_pooled_upstream_connections(proxy: Proxy, origin: Origin) -> None:
    """20 sequential requests, each on a new client connection, open at most 2 upstream connections."""
    before = origin.stats()["accepted"]
    for i in range(20):
        connection = proxy.connection()
        response = send(connection, "GET", f"/echo/{i}")
        assert json.loads(response.read())["target"] == f"/echo/{i}"
        connection.close()
    opened = origin.stats()["accepted"] - before - 1
    assert 1 <= opened <= 2


def test_client_disconnect_closes_the_upstream_connection(proxy: Proxy, origin: Origin) -> None:
    """A client that closes while its request waits on the origin makes the origin's connection close too."""
    sock = connect(proxy.port)
    sock.sendall(f"GET /hang HTTP/1.1\r\nHost: {proxy.host}\r\n\r\n".encode("ascii"))
    assert origin.stats(min_hang_started=1, timeout=10)["hang_started"] == 1
    sock.close()
    stats = origin.stats(min_hang_closed=1, timeout=5)
    assert stats["hang_closed"] == 1, stats


def test_client_disconnect_mid_upload_closes_the_upstream_connection(proxy: Proxy, origin: Origin) -> None:
    """A client that closes part-way through an upload the origin is not reading makes the origin's connection close."""
    sock = connect(proxy.port)
    sock.sendall(f"POST /stall-upload HTTP/1.1\r\nHost: {proxy.host}\r\nContent-Length: {MiB}\r\n\r\n".encode("ascii"))
    sock.sendall(_BLOCK)
    assert origin.stats(min_stall_started=1, timeout=10)["stall_started"] == 1
    sock.close()
    stats = origin.stats(min_stall_closed=1, timeout=5)
    assert stats["stall_closed"] == 1, stats


def test_head_gets_the_get_headers_and_no_body(proxy: Proxy) -> None:
    """HEAD gets the GET's Content-Length and no body: the next response on the connection parses cleanly."""
    sock = connect(proxy.port)
    f = sock.makefile("rb")
    sock.sendall(f"HEAD /bytes?n=12345 HTTP/1.1\r\nHost: {proxy.host}\r\n\r\n".encode("ascii"))
    status, headers, body = read_response(f, head=True)
    assert status == 200
    assert header_values(headers, "Content-Length") == ["12345"]
    sock.sendall(f"GET /echo/after HTTP/1.1\r\nHost: {proxy.host}\r\n\r\n".encode("ascii"))
    status, _, body = read_response(f)
    assert status == 200
    assert json.loads(body)["target"] == "/echo/after"


@pytest.mark.parametrize("target", ["/status?code=204", "/status?code=304", "/status?code=304&cl=10"])
def test_no_body_statuses_have_no_body(proxy: Proxy, target: str) -> None:
    """204 and 304 (even with a Content-Length) reach the client without a body, and the connection stays usable."""
    connection = proxy.connection(timeout=10)
    response = send(connection, "GET", target)
    assert response.status == int(target.split("code=")[1][:3])
    assert response.read() == b""
    assert response.headers["ETag"] == '"v1"'
    response = send(connection, "GET", "/echo/after")
    assert json.loads(response.read())["target"] == "/echo/after"


# -- the command line -------------------------------------------------------------------------------------------------


def assert_one_line_error(result: subprocess.CompletedProcess[str], mentions: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, output
    assert mentions in errors[0], output


@pytest.mark.parametrize("url", ["ftp://example.com", "not a url", "http://127.0.0.1:notaport", "http://[::1"])
def test_unparseable_upstream_exits_with_a_one_line_error(run_daemon: RunDaemon, url: str) -> None:
    """An --upstream that is not a usable http URL ends the daemon non-zero with one error line and no traceback."""
    result = run_daemon("--listen", "tcp:0:interface=127.0.0.1", "--upstream", url)
    assert_one_line_error(result, url)


def test_unknown_option_exits_with_a_one_line_error(run_daemon: RunDaemon) -> None:
    """An unknown option ends the daemon non-zero with one error line and no traceback."""
    result = run_daemon("--upstream", "http://127.0.0.1:1", "--no-such-option")
    assert_one_line_error(result, "--no-such-option")


def test_listen_on_a_port_in_use_exits_with_a_one_line_error(run_daemon: RunDaemon, origin: Origin) -> None:
    """--listen on a port already taken ends the daemon non-zero with one error line and no traceback."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = run_daemon("--listen", f"tcp:{port}:interface=127.0.0.1", "--upstream", origin.url)
    finally:
        taken.close()
    assert_one_line_error(result, str(port))


def test_demo_serves_the_logged_url(proxy_factory: Callable[..., Proxy]) -> None:
    """--demo starts without --upstream, and GETs of the URLs it logs for the proxy answer 200."""
    proxy = proxy_factory("--demo", upstream=None)
    proxy.wait_for_log(rf"^(?!.*listening on).*http://127\.0\.0\.1:{proxy.port}/")  # the hint
    urls = {proxy.url + "/"}
    for line in proxy.log_lines():
        urls.update(re.findall(rf"http://127\.0\.0\.1:{proxy.port}/\S*", line))
    for url in sorted(urls):
        path = url[len(proxy.url) :] or "/"
        connection = proxy.connection()
        response = send(connection, "GET", path)
        body = response.read()
        assert response.status == 200, (url, body)
        assert body


# -- upstream deadlines and invalid upstream responses ----------------------------------------------------------------


def test_upstream_silent_mid_body_is_cut_off(proxy_factory: Callable[..., Proxy], origin: Origin) -> None:
    """--upstream-read-timeout 1: an origin silent after 100 of 1000 bytes gets the client connection closed short."""
    proxy = proxy_factory("--upstream-read-timeout", "1")
    sock = connect(proxy.port, timeout=10)
    sock.sendall(f"GET /silent?declared=1000&send=100 HTTP/1.1\r\nHost: {proxy.host}\r\n\r\n".encode("ascii"))
    data = read_until_closed(sock)
    assert not is_complete_response(data), data
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert re.search(rb"(?im)^content-length: *1000\r?$", head), head
    assert len(body) == 100
    proxy.wait_for_log(r"sent nothing for 1s mid-body \(read timeout\)")
    stats = origin.stats(min_silent_closed=1, timeout=5)
    assert stats["silent_closed"] == 1, stats


def test_upload_the_upstream_stops_reading_gets_504(proxy_factory: Callable[..., Proxy], origin: Origin) -> None:
    """With --upstream-send-timeout 1, an upload to an origin that never reads it is answered 504 and logged."""
    proxy = proxy_factory("--upstream-send-timeout", "1")
    n = 32 * MiB  # far more than the socket buffers between the proxy and the origin hold
    sock = connect(proxy.port, timeout=15)
    sock.sendall(f"POST /stall-upload HTTP/1.1\r\nHost: {proxy.host}\r\nContent-Length: {n}\r\n\r\n".encode("ascii"))

    def upload() -> None:
        try:
            for _ in range(n // len(_BLOCK)):
                sock.sendall(_BLOCK)
        except OSError:
            pass

    sender = threading.Thread(target=upload, daemon=True)
    sender.start()
    status, _headers = read_head(sock.makefile("rb"))
    assert status == 504
    proxy.wait_for_log(r"stopped reading the request body for 1s \(send timeout\)")
    stats = origin.stats(min_stall_closed=1, timeout=5)
    assert stats["stall_closed"] == 1, stats
    sender.join(15)  # the proxy reads and discards the rest of the body
    assert not sender.is_alive()


_INVALID_RESPONSES = {
    "content-length-and-chunked": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "both Transfer-Encoding and Content-Length",
    ),
    "bare-lf-status-line": (b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok", "bare LF"),
    "gzip-before-chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "unsupported transfer coding",
    ),
    "conflicting-lengths": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", "conflicting"),
}


@pytest.mark.parametrize("raw, reason", _INVALID_RESPONSES.values(), ids=_INVALID_RESPONSES.keys())
def test_malformed_upstream_response_is_502(proxy: Proxy, raw: bytes, reason: str) -> None:
    """A malformed origin response reaches the client as a short 502, with the reason logged."""
    connection = proxy.connection(timeout=10)
    response = send(connection, "GET", "/raw?data=" + quote(raw, safe=""))
    body = response.read()
    assert response.status == 502, body
    assert response.headers["Content-Type"].startswith("text/plain")
    proxy.wait_for_log(re.escape(reason))
    response = send(connection, "GET", "/echo/after")  # the client connection is still usable
    assert json.loads(response.read())["target"] == "/echo/after"
