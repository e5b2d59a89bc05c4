"""
The upstream connection pool and protocol, in memory.
"""

from __future__ import annotations

from _harness import CapturedLog, Harness

from txrevproxy import PoolConfig, ProxyConfig
from txrevproxy._framing import ChunkedDecoder

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
    h.reactor.advance(9)
    assert not up.transport.disconnecting
    h.reactor.advance(2)
    assert up.transport.disconnecting
    up.close()
    _served(h)
    assert h.attempts == 2


def test_pool_keeps_at_most_max_idle():
    """Connections released beyond max_idle are closed, not kept."""
    h = Harness(ProxyConfig(pool=PoolConfig(max_idle=1)))
    other = Harness(ProxyConfig(pool=PoolConfig(max_idle=1)), resource=h.resource)
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
    """Once the idle timeout fires the connection leaves the pool at once: a request arriving before the close completes gets a new one."""
    h = Harness(ProxyConfig(pool=PoolConfig(idle_timeout=10)))
    up = _served(h)
    h.reactor.advance(11)
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
        h.reactor.advance(59.9)
        assert not up.transport.disconnected and not h.client.disconnected
        h.reactor.advance(0.2)
    assert up.transport.disconnected
    assert h.client.disconnected
    assert h.response().endswith(b"first")  # never completed
    assert "sent nothing for 60s mid-body (read timeout)" in log.text()


def test_each_body_read_restarts_the_read_deadline():
    """An upstream that keeps sending, however slowly, within read_timeout is never cut off."""
    h, up = _streaming(read_timeout=10)
    for _ in range(9):
        h.reactor.advance(9)
        up.respond(b"x")
    assert not up.transport.disconnected
    h.reactor.advance(9.9)
    assert not up.transport.disconnected
    h.reactor.advance(0.2)
    assert up.transport.disconnected and h.client.disconnected


def test_paused_reading_does_not_count_toward_the_read_deadline():
    """Time while the proxy has paused the upstream for a slow client is not upstream silence; the count restarts on resume."""
    h, up = _streaming(read_timeout=10)
    h.reactor.advance(5)
    h.channel.pauseProducing()  # the client's transport is full
    assert up.transport.producerState == "paused"
    h.reactor.advance(1000)
    assert not up.transport.disconnected and not h.client.disconnected
    h.channel.resumeProducing()
    h.reactor.advance(9.9)
    assert not up.transport.disconnected
    h.reactor.advance(0.2)
    assert up.transport.disconnected and h.client.disconnected


def test_silent_before_any_body_byte_is_504():
    """A response head followed by silence, nothing yet written to the client: the client gets a 504, not the head."""
    h = Harness(ProxyConfig(pool=PoolConfig(read_timeout=5)))
    h.send(GET)
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nSet-Cookie: s=1\r\n\r\n")
    h.reactor.advance(5.1)
    assert up.transport.disconnected
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
    h.reactor.advance(3.1)
    assert up.transport.disconnected and h.client.disconnected
    assert not h.response().endswith(b"0\r\n\r\n")
