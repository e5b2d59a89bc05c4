"""
The responses the proxy makes itself, and what it adds to relayed ones, in memory on HTTP/1.1 and HTTP/2: the
standard reason phrases (an upstream's own phrase is relayed byte for byte), no ``Server`` header of the proxy's own
(an upstream's is relayed as it is), the plain-text error bodies.
"""

from __future__ import annotations

from collections.abc import Callable

import h2.events
import pytest
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tests._harness import Harness, head_and_body, header_lines
from tests._requests import HOST
from tests.test_h2 import H2Pair
from txrevproxy import (
    AccessPolicy,
    ClientConfig,
    HeadLimits,
    PassThroughProxyResource,
    PoolConfig,
    ProxyConfig,
    ProxySite,
)
from txrevproxy._http.responses import error_body, error_response, reason_phrase

GET = b"GET /r HTTP/1.1\r\n" + HOST + b"\r\n"

#: The statuses the proxy answers with itself, and their standard reason phrases (RFC 9110 section 15, RFC 6585).
PHRASES = {
    100: b"Continue",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    417: b"Expectation Failed",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


@pytest.mark.parametrize("status, phrase", PHRASES.items())
def test_standard_reason_phrases(status: int, phrase: bytes) -> None:
    """Each status the proxy answers with has its RFC 9110 reason phrase, whatever the Python version, in the status
    line and the body of its error response."""
    assert reason_phrase(status) == phrase
    assert error_body(status) == b"%d %s\n" % (status, phrase)
    assert error_response(status).startswith(b"HTTP/1.1 %d %s\r\n" % (status, phrase))


def test_a_code_without_a_phrase() -> None:
    """A code with no standard phrase gets an empty one (valid on a status line) and a body of the bare code."""
    assert reason_phrase(599) == b""
    assert error_body(599) == b"599\n"
    assert error_response(599).startswith(b"HTTP/1.1 599 \r\n")


SMALL = ClientConfig(head=HeadLimits(request_line=100, header_line=100), max_body=10, head_timeout=5)


def _send(raw: bytes, client: ClientConfig = SMALL) -> Callable[[], Harness]:
    def make() -> Harness:
        h = Harness(client=client)
        h.send(raw)
        return h

    return make


def _head_timeout() -> Harness:
    h = _send(b"GET /r HTTP/1.1\r\n")()
    h.advance(5)
    return h


def _upstream_refused() -> Harness:
    h = _send(GET)()
    h.upstream().refuse()
    return h


def _connect_timeout() -> Harness:
    h = Harness(ProxyConfig(pool=PoolConfig(connect_timeout=2)))
    h.send(GET)
    h.advance(2)
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
def test_own_responses(status: int, make: Callable[[], Harness]) -> None:
    """Each of the proxy's own HTTP/1.1 responses has its status with the standard reason phrase, and no Server
    header."""
    head, _ = head_and_body(make().response())
    assert head.split(b"\r\n", 1)[0] == b"HTTP/1.1 %d %s" % (status, PHRASES[status]), head
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


def test_own_responses_in_a_plain_site() -> None:
    """In Twisted's own Site (its own phrases, its Server header on every request), the proxy's error responses
    have the standard reason phrase and name no server."""
    h = Harness(site_class=Site)
    h.send(GET)
    h.upstream().refuse()
    head, _ = head_and_body(h.response())
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert _server_lines(head) == []


#: Upstream status lines and what the client gets: the upstream's own phrase byte for byte, the standard one if empty.
RELAYED_STATUS_LINES = [
    (b"HTTP/1.1 200 Fine", b"HTTP/1.1 200 Fine"),
    (b"HTTP/1.1 404 Nope, not here", b"HTTP/1.1 404 Nope, not here"),
    (b"HTTP/1.1 200  spaced\tout ", b"HTTP/1.1 200  spaced\tout "),
    (b"HTTP/1.1 200 Tr\xe8s bien", b"HTTP/1.1 200 Tr\xe8s bien"),
    (b"HTTP/1.1 413 Request Entity Too Large", b"HTTP/1.1 413 Request Entity Too Large"),
    (b"HTTP/1.0 200 OK", b"HTTP/1.1 200 OK"),
    (b"HTTP/1.1 431", b"HTTP/1.1 431 Request Header Fields Too Large"),
    (b"HTTP/1.1 413 ", b"HTTP/1.1 413 Content Too Large"),
    (b"HTTP/1.1 299", b"HTTP/1.1 299 "),
]


@pytest.mark.parametrize("site_class", [ProxySite, Site])
@pytest.mark.parametrize("upstream, client", RELAYED_STATUS_LINES)
def test_relayed_reason_phrase(site_class: type[Site], upstream: bytes, client: bytes) -> None:
    """A relayed response keeps the upstream's reason phrase byte for byte, in ProxySite and in a plain Site; an
    empty one gets the standard phrase."""
    h = Harness(site_class=site_class)
    h.send(GET)
    h.upstream().accept().respond(upstream + b"\r\nContent-Length: 2\r\n\r\nok")
    assert h.response().split(b"\r\n", 1)[0] == client


def test_status_set_through_the_request_gets_the_standard_phrase() -> None:
    """A resource in ProxySite that sets a status without a phrase gets the standard one, not Twisted's (which has
    none for 429 or 431); one it gives is kept."""

    class Status(Resource):
        isLeaf = True

        def render_GET(self, request: Request) -> bytes:
            code, _, phrase = request.path[1:].partition(b"-")
            request.setResponseCode(int(code), phrase or None)
            return b"x"

    lines = []
    for path in (b"/431", b"/429", b"/413", b"/200-Fine"):
        h = Harness(resource=Status())
        h.send(b"GET %s HTTP/1.1\r\n" % (path,) + HOST + b"\r\n")
        lines.append(h.response().split(b"\r\n", 1)[0])
    assert lines == [
        b"HTTP/1.1 431 Request Header Fields Too Large",
        b"HTTP/1.1 429 Too Many Requests",
        b"HTTP/1.1 413 Content Too Large",
        b"HTTP/1.1 200 Fine",
    ]


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
