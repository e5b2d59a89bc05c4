"""
The client side of the daemon in memory: raw request bytes in, status out, and exactly what (if anything) reached
the upstream; limits and deadlines driven by a ``MemoryReactorClock``.
"""

from __future__ import annotations

import re

import pytest

from tests._harness import Harness, head_and_body, header_lines
from tests._requests import HOST, REFUSED
from txrevproxy import PoolConfig, ProxyConfig
from txrevproxy._http.head import HeadLimits
from txrevproxy._server.channel import ProxySite
from txrevproxy._server.config import ClientConfig

SMALL = ClientConfig(max_body=100)  # the cap REFUSED assumes


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _statuses(response: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", response)]


# -- refused before anything is forwarded -----------------------------------------------------------------------


@pytest.mark.parametrize("raw, status", REFUSED)
@pytest.mark.parametrize("pieces", [1, 7])
def test_refused_before_forwarding(raw, status, pieces):
    """An ambiguous or malformed request is answered with its status, the connection closed, nothing forwarded."""
    h = Harness(client=SMALL)
    size = max(1, -(-len(raw) // pieces))
    for i in range(0, len(raw), size):
        h.send(raw[i : i + size])
    assert _status(h.response()) == status
    assert h.client.disconnecting
    assert h.attempts == 0
    assert b"Connection: close\r\n" in h.response()


def test_bytes_after_a_refusal_are_ignored():
    """After a refused request nothing else on the connection is read or answered."""
    h = Harness()
    h.send(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert _statuses(h.response()) == [400]
    assert h.attempts == 0


# -- refused mid-body: the upstream request is abandoned -------------------------------------------------------

CHUNKED_HEAD = b"POST /up HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "body, status",
    [
        (b"-1\r\n", 400),
        (b"+1\r\na\r\n", 400),
        (b"0x1\r\na\r\n", 400),
        (b"1 1\r\na\r\n", 400),
        (b"fffffffffffffffff\r\n", 400),
        (b"z\r\n", 400),
        (b"\r\n", 400),
        (b"1\na\r\n", 400),
        (b"1\r\na\n", 400),
        (b"1\ra\r\n", 400),
        (b"1\r\nab0\r\n\r\n", 400),
        (b"1;\r\na\r\n", 400),
        (b'1;a="b\r\na\r\n', 400),
        (b"1;a\x01\r\na\r\n", 400),
        (b"1;" + b"a" * 5000 + b"\r\n", 400),
        (b"0\r\nX: 1\n\r\n", 400),
        (b"40\r\n" + b"a" * 64 + b"\r\n40\r\n" + b"a" * 64 + b"\r\n", 413),
    ],
)
def test_bad_chunked_body_refused_and_upstream_aborted(body, status):
    """A chunked body that breaks the coding or the size cap: 400/413 to the client, upstream request aborted."""
    h = Harness(client=SMALL)
    h.send(CHUNKED_HEAD)
    up = h.upstream().accept()
    h.send(body)
    assert _statuses(h.response()) == [status]
    assert h.client.disconnecting
    assert up.transport.aborted  # aborted: the upstream never sees a complete request
    assert not up.received().endswith(b"0\r\n\r\n")


def test_bad_chunk_after_response_started_aborts_client():
    """A body error once the response has begun cannot be answered: the client connection is aborted."""
    h = Harness()
    h.send(CHUNKED_HEAD + b"1\r\na\r\n")
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe")
    h.send(b"zz\r\n")
    assert _statuses(h.response()) == [200]
    assert h.client.aborted
    assert up.transport.aborted


def test_chunked_body_reframed_without_extensions_or_trailers():
    """Chunk extensions and trailers are not forwarded: the proxy frames the body it sends itself."""
    h = Harness()
    h.send(CHUNKED_HEAD + b'3;name="v" ; x\r\nabc\r\n002\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n')
    up = h.upstream().accept()
    head, body = head_and_body(up.received())
    assert b"Transfer-Encoding: chunked" in header_lines(head)
    assert body == b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"


def test_length_body_over_cap_is_413_before_connecting():
    """A Content-Length over the cap is refused before any upstream connection is attempted."""
    h = Harness(client=ClientConfig(max_body=10))
    h.send(b"PUT / HTTP/1.1\r\n" + HOST + b"Content-Length: 11\r\n\r\n")
    assert _status(h.response()) == 413
    assert h.attempts == 0


def test_body_at_cap_is_forwarded():
    """A body exactly at the cap is relayed."""
    h = Harness(client=ClientConfig(max_body=10))
    h.send(b"PUT / HTTP/1.1\r\n" + HOST + b"Content-Length: 10\r\n\r\n0123456789")
    assert head_and_body(h.upstream().accept().received())[1] == b"0123456789"


# -- accepted, and what is forwarded ---------------------------------------------------------------------------


def test_leading_empty_lines_ignored():
    """Empty lines before a request line are skipped (RFC 9112 section 2.2)."""
    h = Harness()
    h.send(b"\r\n\r\nGET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert h.upstream().accept().received().startswith(b"GET / HTTP/1.1\r\n")


def test_h2c_upgrade_not_forwarded():
    """Upgrade: h2c and HTTP2-Settings never reach the upstream."""
    h = Harness()
    h.send(
        b"GET / HTTP/1.1\r\n"
        + HOST
        + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
    )
    sent = h.upstream().accept().received().lower()
    assert b"upgrade" not in sent and b"http2-settings" not in sent


def test_expect_continue_answered_once_and_not_forwarded():
    """Expect: 100-continue gets exactly one 100 Continue from the proxy; the upstream sees no Expect."""
    h = Harness()
    h.send(b"POST / HTTP/1.1\r\n" + HOST + b"Expect: 100-Continue\r\nContent-Length: 4\r\n\r\n")
    assert h.response() == b"HTTP/1.1 100 Continue\r\n\r\n"
    up = h.upstream().accept()
    h.send(b"ab")
    h.send(b"cd")
    assert b"expect" not in up.received().lower()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert _statuses(h.response()) == [100, 200]


def test_expect_continue_ignored_in_http10_and_without_body():
    """No 100 Continue for an HTTP/1.0 request or one without a body."""
    h = Harness()
    h.send(b"GET / HTTP/1.1\r\n" + HOST + b"Expect: 100-continue\r\n\r\n")
    assert h.response() == b""
    h2 = Harness()
    h2.send(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
    assert h2.response() == b""


def test_pipelined_requests_answered_in_order_one_at_a_time():
    """Pipelined requests are forwarded one after another and answered in order."""
    h = Harness()
    h.send(b"GET /1 HTTP/1.1\r\n" + HOST + b"\r\nGET /2 HTTP/1.1\r\n" + HOST + b"\r\n")
    assert h.attempts == 1
    up = h.upstream().accept()
    assert up.received().startswith(b"GET /1 ")
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
    assert up.received().count(b"GET /2 ") == 1  # same pooled connection, after the first response
    up.respond(b"HTTP/1.1 201 OK\r\nContent-Length: 3\r\n\r\ntwo")
    assert _statuses(h.response()) == [200, 201]
    assert h.response().endswith(b"two")


def test_pipelined_bytes_are_bounded():
    """While one request is answered, reading pauses once more than a bounded amount of later requests is held."""
    h = Harness()
    h.send(b"GET /1 HTTP/1.1\r\n" + HOST + b"\r\n")
    up = h.upstream().accept()
    h.send(b"GET /2 HTTP/1.1\r\n" + HOST + b"X: " + b"a" * 4100 + b"\r\nY: " + b"a" * 4100 + b"\r\n\r\n")
    assert h.client.reading
    h.send(
        b"GET /3 HTTP/1.1\r\n"
        + HOST
        + b"X: "
        + b"a" * 4100
        + b"\r\nY: "
        + b"a" * 4100
        + b"\r\n\r\n"
        + b"GET /4 HTTP/1.1\r\n"
    )
    assert not h.client.reading
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert h.client.reading
    assert up.received().count(b"GET /2 ") == 1


def test_head_limits_configurable():
    """The head limits come from the site's ClientConfig."""
    h = Harness(client=ClientConfig(head=HeadLimits(request_line=20)))
    h.send(b"GET /" + b"a" * 20 + b" HTTP/1.1\r\n" + HOST + b"\r\n")
    assert _status(h.response()) == 414


def test_long_request_line_refused_before_it_ends():
    """A request line over the limit is answered 414 without waiting for its end."""
    h = Harness(client=ClientConfig(head=HeadLimits(request_line=20)))
    h.send(b"GET /" + b"a" * 30)
    assert _status(h.response()) == 414


MALFORMED_REQUEST_LINES = [b"GET /r\r\n", b"GET  /r HTTP/1.1\r\n", b"G@T /r HTTP/1.1\r\n", b"GET /r HTTP/1.2x\r\n"]


@pytest.mark.parametrize("line", MALFORMED_REQUEST_LINES)
@pytest.mark.parametrize("bytewise", [False, True])
def test_malformed_request_line_refused_at_its_crlf(line: bytes, bytewise: bool) -> None:
    """A malformed request line is answered 400 (plain text, Connection: close) and the connection closed as soon
    as its CRLF is in, without waiting for a blank line or the head deadline."""
    h = Harness()
    for piece in [line[i : i + 1] for i in range(len(line))] if bytewise else [line]:
        assert h.response() == b""
        h.send(piece)
    head, body = head_and_body(h.response())
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close" in header_lines(head) and b"Content-Type: text/plain; charset=utf-8" in head
    assert body == b"400 Bad Request\n"
    assert h.client.disconnecting
    assert h.attempts == 0


def test_malformed_request_line_after_headers_started() -> None:
    """Header bytes arriving with a malformed request line change nothing: 400 at once."""
    h = Harness()
    h.send(b"GET /r HTTP/1.x\r\n" + HOST)
    assert _status(h.response()) == 400
    assert h.client.disconnecting


def test_request_line_at_its_limit_waits_one_byte_over_is_414() -> None:
    """A request line still open is refused 414 with the first byte past --max-request-line, not before."""
    h = Harness(client=ClientConfig(head=HeadLimits(request_line=20)))
    h.send(b"GET /" + b"a" * 15)
    h.send(b"\r")  # (a CR may be the start of the line's CRLF)
    assert h.response() == b""
    h.send(b"a")
    assert h.response().startswith(b"HTTP/1.1 414 ")
    assert h.client.disconnecting


def test_valid_request_arriving_a_byte_at_a_time() -> None:
    """A valid request line is not refused early: a head arriving byte by byte is relayed."""
    h = Harness()
    raw = b"GET /r HTTP/1.1\r\n" + HOST + b"\r\n"
    for i in range(len(raw)):
        h.send(raw[i : i + 1])
    assert h.response() == b""
    assert h.upstream().accept().received().startswith(b"GET /r HTTP/1.1\r\n")


@pytest.mark.parametrize("bad", [False, True])
def test_leading_empty_lines_then_a_request_line_in_pieces(bad: bool) -> None:
    """Empty lines before a request line arriving in pieces are skipped; the line is then judged at its CRLF."""
    h = Harness()
    for piece in [b"\r", b"\n\r\n", b"\r", b"\nGET /r ", b"HTTP/1.%s\r\n" % (b"x" if bad else b"1")]:
        h.send(piece)
    if bad:
        assert _status(h.response()) == 400
        return
    assert h.response() == b""
    h.send(HOST + b"\r\n")
    assert h.upstream().accept().received().startswith(b"GET /r HTTP/1.1\r\n")


def test_pipelined_malformed_request_line_answered_after_the_request_before_it() -> None:
    """A malformed request line pipelined behind a valid request gets its 400 once that request is answered."""
    h = Harness()
    h.send(b"GET /1 HTTP/1.1\r\n" + HOST + b"\r\nGET /2\r\n")
    assert h.response() == b""
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert _statuses(h.response()) == [200, 400]
    assert h.client.disconnecting
    assert up.received().count(b"GET ") == 1


# -- deadlines --------------------------------------------------------------------------------------------------


def test_slow_head_gets_408():
    """A head not complete within head_timeout of its first byte is answered 408 and the connection closed."""
    h = Harness(client=ClientConfig(head_timeout=10))
    h.send(b"GET / HTTP/1.1\r\n")
    h.advance(5)
    h.send(b"Host: x\r\n")  # progress does not extend the head deadline
    h.advance(4.9)
    assert h.response() == b""
    h.advance(0.2)
    assert _status(h.response()) == 408
    assert h.client.disconnecting
    assert h.attempts == 0


def test_idle_connection_closed_quietly():
    """A connection that sends nothing is closed after the idle timeout, with no response."""
    h = Harness()
    h.advance(59)
    assert not h.client.disconnecting
    h.advance(2)
    assert h.client.disconnecting
    assert h.response() == b""


def test_keep_alive_idle_counts_from_the_last_response():
    """After a response the connection may sit idle for the idle timeout before it is closed."""
    h = Harness()
    h.advance(50)
    h.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    h.upstream().accept().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    h.advance(59)
    assert not h.client.disconnecting
    h.advance(2)
    assert h.client.disconnecting


def test_idle_timeout_applies_after_a_slow_response():
    """A keep-alive connection is still closed after the idle timeout when its last request's head came in pieces
    and its response took longer than the head timeout (the timer of the head deadline had lapsed meanwhile)."""
    h = Harness(client=ClientConfig(head_timeout=10))
    h.send(b"GET / HTTP/1.1\r\n")
    h.send(HOST + b"\r\n")
    up = h.upstream().accept()
    h.reactor.advance(15)
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    h.reactor.advance(59)
    assert not h.client.disconnecting
    h.reactor.advance(2)
    assert h.client.disconnecting


def test_no_idle_timeout_never_closes_for_idleness():
    """With no idle timeout (``timeout=None``), a kept-alive connection whose last head had a head deadline stays
    open between requests for as long as the client likes."""
    h = Harness(site_class=lambda *a, **kw: ProxySite(*a, **kw, timeout=None), client=ClientConfig(head_timeout=10))
    h.send(b"GET / HTTP/1.1\r\n")
    h.send(HOST + b"\r\n")
    h.upstream().accept().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    h.reactor.advance(10**6)
    assert not h.client.disconnecting


def test_request_in_flight_is_not_idle():
    """A request waiting for its response is not closed by the idle timeout (the upstream deadlines apply)."""
    h = Harness(ProxyConfig(pool=PoolConfig(read_timeout=1000)))
    h.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    up = h.upstream().accept()
    h.advance(29)
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n")
    h.advance(100)
    assert not h.client.disconnecting
    up.respond(b"x")
    assert _statuses(h.response()) == [200]


def test_stalled_body_gets_408_and_upstream_aborted():
    """A body that makes no progress for body_timeout is refused with 408; the upstream request is aborted."""
    h = Harness(client=ClientConfig(body_timeout=30))
    h.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 10\r\n\r\n12345")
    up = h.upstream().accept()
    h.advance(29)
    h.send(b"6")  # progress restarts the deadline
    h.advance(29)
    assert h.response() == b""
    h.advance(2)
    assert _status(h.response()) == 408
    assert up.transport.aborted


def test_stalled_body_after_response_started_aborts():
    """A stalled body whose response has begun ends with an abort of both connections."""
    h = Harness(client=ClientConfig(body_timeout=30))
    h.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 10\r\n\r\n12345")
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    h.advance(31)
    assert h.client.aborted
    assert up.transport.aborted


def test_body_paused_by_slow_upstream_does_not_time_out():
    """Time the proxy itself holds the client's body back (upstream slow) does not count against the client."""
    h = Harness(client=ClientConfig(body_timeout=30))
    h.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 100000\r\n\r\n")
    up = h.upstream().accept()
    up.transport.producer.pauseProducing()  # the upstream's send buffer is full
    h.send(b"a" * 1000)
    assert not h.client.reading
    h.advance(50)  # past the body timeout, below the upstream's --upstream-send-timeout
    assert h.response() == b""
    up.transport.producer.resumeProducing()
    assert h.client.reading
    h.advance(29)
    assert h.response() == b""
    h.advance(2)
    assert _status(h.response()) == 408


def test_client_not_reading_is_aborted():
    """A client that reads nothing of the response for send_timeout is aborted, and so is the upstream request."""
    h = Harness(client=ClientConfig(send_timeout=60))
    h.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 1000)
    h.channel.pauseProducing()  # what the transport does when its send buffer is full
    h.advance(59)
    h.channel.resumeProducing()
    h.channel.pauseProducing()
    h.advance(59)
    assert not h.client.aborted
    h.advance(2)
    assert h.client.aborted
    h.client_closed()
    assert up.transport.aborted


def test_other_resources_in_a_proxy_site():
    """A resource that is not the proxy answers through ProxySite as in a Site, with Date but no Server header."""
    from twisted.web.resource import Resource

    class Hello(Resource):
        isLeaf = True

        def render_GET(self, request):
            return b"hello"

    h = Harness(resource=Hello())
    h.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    head, body = head_and_body(h.response())
    assert head.startswith(b"HTTP/1.1 200 OK") and body == b"hello"
    lines = header_lines(head)
    assert any(line.startswith(b"Date: ") for line in lines)
    assert not any(line.lower().startswith(b"server:") for line in lines)


def test_proxy_request_has_every_attribute_twisted_request_sets():
    """ProxyRequest sets Twisted's Request attributes itself (for speed): none of them may go missing."""
    from twisted.web.server import Request

    from txrevproxy._server.request import ProxyRequest

    h = Harness()
    ours, twisted = ProxyRequest(h.channel), Request(h.channel)
    assert set(vars(twisted)) - {"requestHeaders"} <= set(vars(ours))
    assert ours.client == twisted.client and ours.getHost() == twisted.getHost()
    assert ours.channel is twisted.channel and ours.transport is twisted.transport


@pytest.mark.parametrize("leaf", [True, False])
def test_resources_see_twisteds_traversal_paths(leaf):
    """A leaf root is found without traversal (the daemon's case), yet sees the same prepath, postpath and sitepath
    as under Twisted's Site; a non-leaf root is traversed as usual."""
    from twisted.web.resource import Resource

    seen = []

    class Show(Resource):
        isLeaf = True

        def render_GET(self, request):
            seen.append((request.prepath, request.postpath, request.sitepath))
            return b"ok"

    root = Show()
    if not leaf:
        root = Resource()
        root.putChild(b"a", Show())
    h = Harness(resource=root)
    h.send(b"GET /a/b%20c/d?q=1 HTTP/1.1\r\n" + HOST + b"\r\n")
    assert _status(h.response()) == 200
    assert seen == [([], [b"a", b"b c", b"d"], [])] if leaf else [([b"a"], [b"b c", b"d"], [])]


@pytest.mark.parametrize("tls", [False, True])
def test_client_connections_send_without_nagle_delay(tls):
    """A client's TCP connection, plain or under TLS, has TCP_NODELAY set (by Twisted's HTTPChannel), so that a small
    write (a chunk, a head ahead of its body) is not held back until the client acknowledges the previous one."""
    import socket

    from twisted.internet import ssl, tcp
    from twisted.internet.testing import MemoryReactor
    from twisted.protocols.tls import TLSMemoryBIOFactory

    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, address = listener.accept()
    accepted.setblocking(False)
    h = Harness()
    factory = TLSMemoryBIOFactory(ssl.CertificateOptions(), False, h.site) if tls else h.site
    protocol = factory.buildProtocol(None)
    transport = tcp.Server(accepted, protocol, address, None, 1, MemoryReactor())
    assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    protocol.makeConnection(transport)
    assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    for sock in (client, accepted, listener):
        sock.close()
