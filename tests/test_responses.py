"""
The responses the proxy makes itself, and what it adds to relayed ones, in memory on HTTP/1.1 and HTTP/2: no
``Server`` header of the proxy's own (an upstream's is relayed as it is), the plain-text error bodies.
"""

from __future__ import annotations

from collections.abc import Callable

import h2.events
import pytest
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Site

from _harness import Harness, head_and_body, header_lines
from _requests import HOST
from test_h2 import H2Pair
from txrevproxy import AccessPolicy, ClientConfig, HeadLimits, PassThroughProxyResource, PoolConfig, ProxyConfig

GET = b"GET /r HTTP/1.1\r\n" + HOST + b"\r\n"
SMALL = ClientConfig(head=HeadLimits(request_line=100, header_line=100), max_body=10, head_timeout=5)


def _send(raw: bytes, client: ClientConfig = SMALL) -> Callable[[], Harness]:
    def make() -> Harness:
        h = Harness(client=client)
        h.send(raw)
        return h

    return make


def _head_timeout() -> Harness:
    h = _send(b"GET /r HTTP/1.1\r\n")()
    h.reactor.advance(5)
    return h


def _upstream_refused() -> Harness:
    h = _send(GET)()
    h.upstream().refuse()
    return h


def _connect_timeout() -> Harness:
    h = Harness(ProxyConfig(pool=PoolConfig(connect_timeout=2)))
    h.send(GET)
    h.reactor.advance(2)
    return h


def _invalid_upstream_response() -> Harness:
    h = _send(GET)()
    h.upstream().accept().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    return h


def _access_refused() -> Harness:
    def make(reactor: object) -> PassThroughProxyResource:
        return PassThroughProxyResource("127.0.0.1", 8000, b"", reactor, access=AccessPolicy.parse(deny=["0.0.0.0/0"]))

    h = Harness(resource=make)
    h.send(GET)
    return h


def _not_found() -> Harness:
    h = Harness(resource=notFound())  # a twisted.web error page (setResponseCode(404))
    h.send(GET)
    return h


def _resource_failed() -> Harness:
    class Failing(Resource):
        isLeaf = True

        def render_GET(self, request: object) -> bytes:
            raise RuntimeError("broken")

    h = Harness(resource=Failing())
    h.send(GET)
    return h


#: Every way of getting one of the proxy's own responses on HTTP/1.1: (status, how).
OWN_RESPONSES: list[tuple[int, Callable[[], Harness]]] = [
    (400, _send(b"GET /r\r\n")),  # a malformed request line, answered at its CRLF
    (400, _send(b"GET /r HTTP/1.1\r\n\r\n")),  # no Host
    (403, _access_refused),
    (404, _not_found),
    (408, _head_timeout),
    (413, _send(b"PUT /r HTTP/1.1\r\n" + HOST + b"Content-Length: 11\r\n\r\n")),
    (414, _send(b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n")),
    (417, _send(b"PUT /r HTTP/1.1\r\n" + HOST + b"Expect: 200-ok\r\nContent-Length: 1\r\n\r\n")),
    (431, _send(b"GET /r HTTP/1.1\r\n" + HOST + b"X: " + b"a" * 100 + b"\r\n\r\n")),
    (500, _resource_failed),
    (501, _send(b"POST /r HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip, chunked\r\n\r\n")),
    (502, _upstream_refused),
    (502, _invalid_upstream_response),
    (504, _connect_timeout),
    (505, _send(b"GET /r HTTP/2.0\r\n" + HOST + b"\r\n")),
]


def _server_lines(head: bytes) -> list[bytes]:
    return [line for line in header_lines(head) if line.lower().startswith(b"server:")]


@pytest.mark.parametrize("status, make", OWN_RESPONSES)
def test_own_responses_name_no_server(status: int, make: Callable[[], Harness]) -> None:
    """Each of the proxy's own HTTP/1.1 responses has its status and no Server header."""
    head, _ = head_and_body(make().response())
    assert head.startswith(b"HTTP/1.1 %d " % (status,)), head
    assert _server_lines(head) == []


@pytest.mark.parametrize("server", [None, b"Server: origin/1.0 (x)"])
def test_relayed_response_keeps_the_upstreams_server_or_none(server: bytes | None) -> None:
    """A relayed HTTP/1.1 response has the upstream's Server header as it was sent, or none when it sent none."""
    h = _send(GET)()
    extra = b"" if server is None else server + b"\r\n"
    h.upstream().accept().respond(b"HTTP/1.1 200 OK\r\n" + extra + b"Content-Length: 2\r\n\r\nok")
    head, body = head_and_body(h.response())
    assert body == b"ok"
    assert _server_lines(head) == ([] if server is None else [server])


def test_own_responses_in_a_plain_site_name_no_server() -> None:
    """In Twisted's own Site, which names itself on every request, the proxy's error responses name no server."""
    h = Harness(site_class=Site)
    h.send(GET)
    h.upstream().refuse()
    head, _ = head_and_body(h.response())
    assert head.startswith(b"HTTP/1.1 502 ")
    assert _server_lines(head) == []


# -- HTTP/2 --------------------------------------------------------------------------------------------------------


def _h2_response(pair: H2Pair, stream: int) -> list[tuple[bytes, bytes]]:
    [response] = pair.of(h2.events.ResponseReceived, stream)
    return list(response.headers)  # type: ignore[attr-defined]


def _h2_relayed(raw: bytes) -> list[tuple[bytes, bytes]]:
    pair = H2Pair()
    stream = pair.request(b"GET", b"/r")
    pair.h.upstream().accept().respond(raw)
    pair.pump()
    return _h2_response(pair, stream)


def _h2_refused_upstream() -> list[tuple[bytes, bytes]]:
    pair = H2Pair()
    stream = pair.request(b"GET", b"/r")
    pair.h.upstream().refuse()
    pair.pump()
    return _h2_response(pair, stream)


def _h2_open(path: bytes, headers: list[tuple[bytes, bytes]], end: bool = True) -> list[tuple[bytes, bytes]]:
    pair = H2Pair(client=SMALL)
    stream = pair.open(b"POST", path, headers, end=end)
    return _h2_response(pair, stream)


def _h2_body_timeout() -> list[tuple[bytes, bytes]]:
    pair = H2Pair(client=SMALL)
    stream = pair.open(b"POST", b"/r")
    pair.h.upstream().accept()
    pair.h.reactor.advance(SMALL.body_timeout)
    pair.pump()
    return _h2_response(pair, stream)


def _h2_connect_timeout() -> list[tuple[bytes, bytes]]:
    pair = H2Pair()
    stream = pair.request(b"GET", b"/r")
    pair.h.reactor.advance(PoolConfig().connect_timeout)
    pair.pump()
    return _h2_response(pair, stream)


H2_OWN_RESPONSES: list[tuple[int, Callable[[], list[tuple[bytes, bytes]]]]] = [
    (400, lambda: _h2_open(b"a", [])),
    (408, _h2_body_timeout),
    (413, lambda: _h2_open(b"/r", [(b"content-length", b"11")], end=False)),
    (414, lambda: _h2_open(b"/" + b"a" * 100, [])),
    (431, lambda: _h2_open(b"/r", [(b"x", b"a" * 100)])),
    (502, _h2_refused_upstream),
    (502, lambda: _h2_relayed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")),
    (504, _h2_connect_timeout),
]


@pytest.mark.parametrize("status, make", H2_OWN_RESPONSES)
def test_h2_own_responses_name_no_server(status: int, make: Callable[[], list[tuple[bytes, bytes]]]) -> None:
    """Each of the proxy's own HTTP/2 responses has its status and no server header."""
    headers = make()
    assert (b":status", b"%d" % (status,)) in headers
    assert [name for name, _ in headers if name == b"server"] == []


@pytest.mark.parametrize("server", [None, b"origin/1.0 (x)"])
def test_h2_relayed_response_keeps_the_upstreams_server_or_none(server: bytes | None) -> None:
    """A relayed HTTP/2 response has the upstream's Server value as it was sent, or no server header at all."""
    extra = b"" if server is None else b"Server: " + server + b"\r\n"
    headers = _h2_relayed(b"HTTP/1.1 200 OK\r\n" + extra + b"Content-Length: 2\r\n\r\nok")
    assert (b":status", b"200") in headers
    assert [value for name, value in headers if name == b"server"] == ([] if server is None else [server])
