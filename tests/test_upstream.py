"""
The upstream connection pool and protocol, in memory.
"""

from __future__ import annotations

import pytest
from twisted.web.server import Site

from tests._harness import CapturedLog, Harness, head_and_body
from txrevproxy import PoolConfig, ProxyConfig
from txrevproxy._http.framing import ChunkedDecoder

GET = b"GET / HTTP/1.1\r\nHost: e\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _served(h: Harness, up=None):
    h.send(GET)
    up = up or h.upstream().accept()
    up.respond(OK)
    return up


def test_idle_connection_expires():
    """An idle pooled connection is closed after the idle timeout and a new one is made afterwards."""
    h = Harness(ProxyConfig(pool=PoolConfig(idle_timeout=10)))
    up = _served(h)
    h.advance(9)
    assert not up.transport.disconnecting
    h.advance(2)
    assert up.transport.disconnecting
    up.close()
    _served(h)
    assert h.attempts == 2


def test_pool_keeps_at_most_max_idle():
    """Connections released beyond max_idle are closed, not kept."""
    h = Harness(ProxyConfig(pool=PoolConfig(max_idle=1)))
    other = h.connect()
    h.send(GET)
    other.send(GET)
    first, second = h.upstream(0).accept(), h.upstream(1).accept()
    first.respond(OK)
    second.respond(OK)
    assert not first.transport.disconnecting
    assert second.transport.disconnecting
    assert h.resource.pool.opened == 2


def test_idle_connection_lost_is_forgotten():
    """A pooled connection closed by the upstream is not handed out again."""
    h = Harness()
    up = _served(h)
    up.close()
    _served(h)
    assert h.attempts == 2


def test_stray_bytes_after_response_discard_connection():
    """Bytes after a complete response mean the connection cannot be trusted: it is closed, not pooled."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    up.respond(OK + b"HTTP/1.1 200 OK\r\n")
    assert up.transport.disconnecting
    assert h.resource.pool.idle_count(up.protocol._wrappedProtocol.address) == 0


def test_response_split_at_every_byte():
    """A response delivered one byte at a time is relayed identically."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    for i in range(len(raw)):
        up.respond(raw[i : i + 1])
    body = []
    decoder = ChunkedDecoder(body.append)
    assert decoder.feed(h.response().partition(b"\r\n\r\n")[2]) == b""
    assert b"".join(body) == b"abcde"
    assert h.resource.pool.idle_count(up.protocol._wrappedProtocol.address) == 1


def test_bare_lf_response_head_is_502():
    """A status line ended by a bare LF is invalid: 502."""
    h = Harness()
    h.send(GET)
    h.upstream().accept().respond(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n")
    assert h.response().startswith(b"HTTP/1.1 502 ")


def test_oversized_response_head_is_502():
    """A response head larger than the limit is refused with 502."""
    h = Harness()
    h.send(GET)
    h.upstream().accept().respond(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000)
    assert h.response().startswith(b"HTTP/1.1 502 ")


def test_http10_upstream_not_reused():
    """An HTTP/1.0 upstream response does not leave a reusable connection."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    up.respond(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert up.transport.disconnecting


def test_expired_idle_connection_is_never_handed_out_while_closing():
    """Once the idle timeout fires the connection leaves the pool: a request before the close gets a new one."""
    h = Harness(ProxyConfig(pool=PoolConfig(idle_timeout=10)))
    up = _served(h)
    h.reactor.advance(11)  # the clock alone: the network has not carried the close yet
    assert up.transport.disconnecting  # closing, but connectionLost has not happened yet
    h.send(b"POST / HTTP/1.1\r\nHost: e\r\nContent-Length: 2\r\n\r\nhi")
    assert h.attempts == 2
    assert up.received().count(b"HTTP/1.1\r\n") == 1
    fresh = h.upstream().accept()
    up.close()
    fresh.respond(OK)
    assert h.response().endswith(b"ok")
    assert b"502" not in h.response()


# -- the mid-body read deadline ---------------------------------------------------------------------------------------

HEAD_100 = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"


def _streaming(read_timeout: float = 60.0) -> tuple[Harness, object]:
    h = Harness(ProxyConfig(pool=PoolConfig(read_timeout=read_timeout)))
    h.send(GET)
    up = h.upstream().accept()
    up.respond(HEAD_100 + b"first")
    return h, up


def test_read_timeout_default_is_60s():
    """The upstream read timeout defaults to 60 seconds."""
    assert PoolConfig().read_timeout == 60.0


def test_upstream_silent_mid_body_aborts_both_connections():
    """No body bytes for read_timeout after some were relayed: the upstream and the client connections are aborted."""
    h, up = _streaming()
    with CapturedLog() as log:
        h.advance(59.9)
        assert not up.transport.aborted and not h.client.aborted
        h.advance(0.2)
    assert up.transport.aborted
    assert h.client.aborted
    assert h.response().endswith(b"first")  # never completed
    assert "sent nothing for 60s mid-body (read timeout)" in log.text()


def test_each_body_read_restarts_the_read_deadline():
    """An upstream that keeps sending, however slowly, within read_timeout is never cut off."""
    h, up = _streaming(read_timeout=10)
    for _ in range(9):
        h.advance(9)
        up.respond(b"x")
    assert not up.transport.aborted
    h.advance(9.9)
    assert not up.transport.aborted
    h.advance(0.2)
    assert up.transport.aborted and h.client.aborted


def test_paused_reading_does_not_count_toward_the_read_deadline():
    """Time the upstream is paused for a slow client is not upstream silence; the count restarts on resume."""
    h, up = _streaming(read_timeout=10)
    h.advance(5)
    h.channel.pauseProducing()  # the client's transport is full
    assert not up.transport.reading
    h.advance(50)  # (below the client's own --send-timeout of 60 s)
    assert not up.transport.aborted and not h.client.aborted
    h.channel.resumeProducing()
    h.advance(9.9)
    assert not up.transport.aborted
    h.advance(0.2)
    assert up.transport.aborted and h.client.aborted


def test_silent_after_head_aborts_the_client():
    """In ProxySite a response head goes out as soon as it is in; silence after it ends with an abort, not a 504."""
    h = Harness(ProxyConfig(pool=PoolConfig(read_timeout=5)))
    h.send(GET)
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    assert h.response().startswith(b"HTTP/1.1 200 OK\r\n")
    h.advance(5.1)
    assert up.transport.aborted and h.client.aborted


def test_silent_before_any_body_byte_is_504_in_a_plain_site():
    """In a plain Site (head written with the first body byte), silence after the head gives the client a 504."""
    h = Harness(ProxyConfig(pool=PoolConfig(read_timeout=5)), site_class=Site)
    h.send(GET)
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nSet-Cookie: s=1\r\n\r\n")
    h.advance(5.1)
    assert up.transport.aborted
    assert h.response().startswith(b"HTTP/1.1 504 ")
    assert b"Set-Cookie" not in h.response()
    assert h.resource.pool.idle_count(up.protocol._wrappedProtocol.address) == 0


def test_completed_response_leaves_no_read_timer():
    """A complete response cancels its read deadline: no read timer is left behind on the pooled connection."""
    h, up = _streaming()
    up.respond(b"y" * 95)
    pending = [call.func.__name__ for call in h.reactor.getDelayedCalls()]
    assert "_checkReadDeadline" not in pending and "_expire" in pending


def test_close_delimited_body_has_a_read_deadline_too():
    """A body delimited by the connection's close is also cut off after read_timeout of silence."""
    h = Harness(ProxyConfig(pool=PoolConfig(read_timeout=3)))
    h.send(GET)
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\n\r\nsome")
    h.advance(3.1)
    assert up.transport.aborted and h.client.aborted
    assert not h.response().endswith(b"0\r\n\r\n")


# -- invalid upstream responses ---------------------------------------------------------------------------------------

from txrevproxy._upstream.protocol import MAX_RESPONSE_HEAD, MAX_RESPONSE_HEADERS  # noqa: E402

_S = b"HTTP/1.1 200 OK\r\n"


def _head_of_size(size: int) -> bytes:
    """A valid response head (Content-Length: 0) of exactly ``size`` bytes including the blank line."""
    start = _S + b"Content-Length: 0\r\nX-Pad: "
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


# (raw upstream bytes, reason logged): each is refused before anything reaches the client.
INVALID_HEADS = {
    "content-length-and-chunked": (
        _S + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "both Transfer-Encoding and Content-Length",
    ),
    "chunked-and-content-length": (
        _S + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "both",
    ),
    "conflicting-content-length-lines": (
        _S + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "conflicting Content-Length",
    ),
    "conflicting-content-length-list": (_S + b"Content-Length: 3, 4\r\n\r\nabcd", "conflicting Content-Length"),
    "non-numeric-content-length": (_S + b"Content-Length: abc\r\n\r\n", "invalid Content-Length"),
    "negative-content-length": (_S + b"Content-Length: -1\r\n\r\n", "invalid Content-Length"),
    "signed-content-length": (_S + b"Content-Length: +3\r\n\r\nabc", "invalid Content-Length"),
    "chunked-twice": (_S + b"Transfer-Encoding: chunked, chunked\r\n\r\n", "chunked more than once"),
    "gzip-before-chunked": (
        _S + b"Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "unsupported transfer coding",
    ),
    "gzip-until-close": (_S + b"Transfer-Encoding: gzip\r\n\r\nabc", "unsupported transfer coding"),
    "identity-coding": (_S + b"Transfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabc", "both"),
    "bare-lf-status-line": (b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", "bare LF"),
    "bare-lf-everywhere": (b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", "bare LF"),
    "bare-lf-header-line": (_S + b"X-A: 1\nContent-Length: 0\r\n\r\n", "bare LF"),
    "bare-cr-status-line": (b"HTTP/1.1 200 OK\rX: 1\r\n\r\n", "malformed status line"),
    "status-code-four-digits": (b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", "malformed status line"),
    "http2-version": (b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", "malformed status line"),
    "not-http": (b"ICY 200 OK\r\n\r\n", "malformed status line"),
    "obs-fold": (_S + b"X-A: 1\r\n  continued\r\nContent-Length: 0\r\n\r\n", "header"),
    "space-before-colon": (_S + b"Content-Length : 0\r\n\r\n", "invalid response header name"),
    "no-colon": (_S + b"Content-Length 0\r\n\r\n", "without a colon"),
    "control-byte-in-value": (_S + b"X-A: a\x01b\r\nContent-Length: 0\r\n\r\n", "control byte"),
    "oversized-head-unterminated": (_S + b"X-Big: " + b"a" * MAX_RESPONSE_HEAD, "too large"),
    "oversized-head-whole": (_head_of_size(MAX_RESPONSE_HEAD + 1), "too large"),
    "too-many-headers": (
        _S + b"".join(b"X-%d: v\r\n" % i for i in range(MAX_RESPONSE_HEADERS)) + b"Content-Length: 0\r\n\r\n",
        "too many response headers",
    ),
    "unexpected-101": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "101"),
}


@pytest.mark.parametrize("raw, reason", INVALID_HEADS.values(), ids=INVALID_HEADS.keys())
@pytest.mark.parametrize("split", [False, True], ids=["whole", "in-pieces"])
def test_invalid_response_head_is_502_and_connection_discarded(raw, reason, split):
    """An invalid upstream response head: 502 to the client, the reason logged, the connection aborted, not pooled."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    with CapturedLog() as log:
        step = (1 if len(raw) < 2000 else 1000) if split else len(raw)
        for piece in [raw[i : i + step] for i in range(0, len(raw), step)]:
            if up.transport.aborted:
                break
            up.respond(piece)
    assert h.response().startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert head_and_body(h.response())[1] == b"502 Bad Gateway\n"
    assert up.transport.aborted
    assert h.resource.pool.idle_count(up.protocol._wrappedProtocol.address) == 0
    assert reason in log.text()
    h.send(GET)
    assert h.attempts == 2  # the next request gets a new connection


@pytest.mark.parametrize(
    "raw",
    [
        _head_of_size(MAX_RESPONSE_HEAD),
        _S + b"".join(b"X-%d: v\r\n" % i for i in range(MAX_RESPONSE_HEADERS - 1)) + b"Content-Length: 0\r\n\r\n",
    ],
    ids=["head-at-size-limit", "headers-at-count-limit"],
)
def test_response_head_at_the_limits_is_relayed(raw):
    """A response head of exactly MAX_RESPONSE_HEAD bytes, or with MAX_RESPONSE_HEADERS lines, is accepted."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    up.respond(raw)
    assert h.response().startswith(b"HTTP/1.1 200 OK\r\n")
    assert h.resource.pool.idle_count(up.protocol._wrappedProtocol.address) == 1


CHUNKED_HEAD = _S + b"Transfer-Encoding: chunked\r\n\r\n"

# Chunked bodies that go wrong after a first good chunk "hello" has been relayed.
INVALID_CHUNKING = {
    "invalid-chunk-size": b"zz\r\nabc\r\n0\r\n\r\n",
    "negative-chunk-size": b"-3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-too-many-digits": b"1" + b"0" * 16 + b"\r\n",
    "missing-crlf-after-data": b"3\r\nabcX\r\n0\r\n\r\n",
    "bare-lf-in-size-line": b"3\nabc\r\n0\r\n\r\n",
    "chunk-line-too-long": b"3;" + b"e" * 5000,
    "chunk-line-too-long-whole": b"3;" + b"e" * 5000 + b"\r\nabc\r\n0\r\n\r\n",
    "empty-size-line": b"\r\nabc\r\n",
}


@pytest.mark.parametrize("tail", INVALID_CHUNKING.values(), ids=INVALID_CHUNKING.keys())
def test_bad_chunking_mid_body_aborts_the_client(tail):
    """Bad chunking after body bytes were relayed: the client connection is aborted, never completed; not pooled."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    up.respond(CHUNKED_HEAD + b"5\r\nhello\r\n")
    assert head_and_body(h.response())[1] == b"5\r\nhello\r\n"
    up.respond(tail)
    assert h.client.aborted
    assert not h.response().endswith(b"0\r\n\r\n")
    assert up.transport.aborted
    assert h.resource.pool.idle_count(up.protocol._wrappedProtocol.address) == 0


# (Missing CRLF after the data is only seen once the data itself has been relayed.)
_BAD_FIRST_CHUNK = {k: v for k, v in INVALID_CHUNKING.items() if k != "missing-crlf-after-data"}


@pytest.mark.parametrize("tail", _BAD_FIRST_CHUNK.values(), ids=_BAD_FIRST_CHUNK.keys())
def test_bad_first_chunk_is_502(tail):
    """Bad chunking before any body byte was relayed: nothing of the response has been sent, so the client gets 502."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nSet-Cookie: s=1\r\nTransfer-Encoding: chunked\r\n\r\n" + tail)
    assert h.response().startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"Set-Cookie" not in h.response()
    assert not h.client.aborted
    assert up.transport.aborted
    h.send(GET)
    assert h.attempts == 2


def test_closed_pool_keeps_no_connection():
    """After the pool is closed (shutdown) its idle connections are closed and a finished one is not pooled again."""
    h = Harness()
    h2 = h.connect()
    h.send(GET)
    h2.send(GET)
    busy, idle = h.upstream(0).accept(), h.upstream(1).accept()
    idle.respond(OK)
    assert not idle.transport.disconnecting  # pooled
    h.resource.pool.close()
    assert idle.transport.disconnecting
    busy.respond(OK)
    assert h.response().endswith(b"ok")
    assert busy.transport.disconnecting
    assert h.resource.pool.idle_count(busy.protocol._wrappedProtocol.address) == 0


def test_idle_deadline_counts_from_the_last_release():
    """A pooled connection reused and released again is closed idle_timeout after its last release, not its first."""
    h = Harness(ProxyConfig(pool=PoolConfig(idle_timeout=30)))
    h.send(GET)
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # released at t=0
    h.advance(10)
    h.send(GET)  # reused at t=10
    h.advance(10)
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # released again at t=20
    h.advance(10.5)  # t=30.5: the first timer fires, finds it idle for only 10.5 s
    assert not up.transport.disconnecting and h.attempts == 1
    h.advance(20)  # t=50.5
    assert up.transport.disconnecting
    assert h.resource.pool.idle_count(up.protocol._wrappedProtocol.address) == 0
