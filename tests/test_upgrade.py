"""
Protocol upgrades in memory: which requests offer one, what goes upstream, the 101 hand-off to a tunnel and the
tunnel itself (bytes, backpressure, closing, the idle deadline).
"""

from __future__ import annotations

from _harness import CapturedLog, Harness, head_and_body, header_lines
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from txrevproxy import ProxyConfig
from txrevproxy._headers import upgrade_accepted, upgrade_offer
from txrevproxy._tunnel import Tunnel
from txrevproxy._upstream import UpstreamAddress

UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
SWITCHED = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)
WS = [(b"Upgrade", b"websocket")]


def test_offer_rules() -> None:
    """An offer needs HTTP/1.1 and upgrade in Connection; h2c is never relayed."""
    assert upgrade_offer(b"HTTP/1.1", frozenset({b"upgrade"}), WS) == b"websocket"
    assert upgrade_offer(b"HTTP/1.1", frozenset(), WS) is None
    assert upgrade_offer(b"HTTP/1.0", frozenset({b"upgrade"}), WS) is None
    assert upgrade_offer(b"HTTP/1.1", frozenset({b"upgrade"}), [(b"Upgrade", b"h2c")]) is None
    both = [(b"Upgrade", b"h2c, foo/2, bar")]
    assert upgrade_offer(b"HTTP/1.1", frozenset({b"upgrade"}), both) == b"foo/2, bar"


def test_accepted_rules() -> None:
    """A 101 must name exactly one protocol, one that was offered (any version of it)."""
    assert upgrade_accepted(b"websocket", [(b"Upgrade", b"WebSocket")])
    assert upgrade_accepted(b"foo/2, bar", [(b"Upgrade", b"foo/3")])
    assert not upgrade_accepted(b"websocket", [(b"Upgrade", b"irc")])
    assert not upgrade_accepted(b"websocket", [])
    assert not upgrade_accepted(b"a, b", [(b"Upgrade", b"a, b")])


def switched() -> tuple[Harness, object]:
    h = Harness()
    h.send(UPGRADE + b"early bytes")
    up = h.upstream().accept()
    up.respond(SWITCHED + b"server hello")
    return h, up


def test_upgrade_forwarded() -> None:
    """The upstream gets Connection: upgrade and the offered Upgrade, plus the end-to-end WebSocket headers."""
    h = Harness()
    h.send(UPGRADE)
    lines = header_lines(head_and_body(h.upstream().accept().received())[0])
    assert b"Connection: upgrade" in lines and b"Upgrade: websocket" in lines
    assert b"Sec-WebSocket-Version: 13" in lines


def test_switch_to_a_tunnel() -> None:
    """After a 101 the client gets its head, then bytes flow raw both ways, those sent early included."""
    h, up = switched()
    head, body = head_and_body(h.response())
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    lines = header_lines(head)
    assert b"Connection: upgrade" in lines and b"Upgrade: websocket" in lines
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in lines
    assert body == b"server hello"
    assert up.received().endswith(b"\r\n\r\nearly bytes")
    h.send(b"GET / HTTP/1.1\r\n\r\n")  # not HTTP any more: relayed as is
    up.respond(b"\x81\x05hello")
    assert up.received().endswith(b"early bytesGET / HTTP/1.1\r\n\r\n")
    assert h.response().endswith(b"server hello\x81\x05hello")
    assert h.resource.pool.idle_count(UpstreamAddress("127.0.0.1", 8000)) == 0


def test_tunnel_closes_with_either_side() -> None:
    """The upstream closing closes the client, and the other way round."""
    h, up = switched()
    up.close()
    assert h.client.disconnecting
    h, up = switched()
    h.client_closed()
    assert up.transport.disconnecting


def test_no_101_keeps_http() -> None:
    """A final response to an upgrade request is relayed as HTTP and the connection reads the next request."""
    h = Harness()
    h.send(UPGRADE + b"GET /next HTTP/1.1\r\nHost: e\r\n\r\n")
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno")
    assert h.response().startswith(b"HTTP/1.1 200 OK")
    assert b"GET /next HTTP/1.1" in up.received()


def test_unoffered_protocol_is_502() -> None:
    """A 101 to a protocol the client did not offer is a 502."""
    h = Harness()
    h.send(UPGRADE)
    with CapturedLog() as captured:
        h.upstream().accept().respond(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: irc\r\nConnection: upgrade\r\n\r\n")
    assert h.response().startswith(b"HTTP/1.1 502 ")
    assert "did not offer" in captured.text()


def test_101_without_an_offer_is_502() -> None:
    """A 101 to a request that offered no upgrade is a 502."""
    h = Harness()
    h.send(b"GET / HTTP/1.1\r\nHost: e\r\n\r\n")
    h.upstream().accept().respond(SWITCHED)
    assert h.response().startswith(b"HTTP/1.1 502 ")


def test_upgrade_with_a_body_is_not_offered() -> None:
    """A request with a body is relayed as a plain request: its Upgrade is dropped."""
    h = Harness()
    h.send(b"POST / HTTP/1.1\r\nHost: e\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\nhi")
    sent = h.upstream().accept().received()
    assert b"Upgrade" not in sent and b"upgrade" not in sent


def test_upgrades_switched_off() -> None:
    """With upgrades off, Upgrade is not forwarded and the request is a plain one."""
    h = Harness(ProxyConfig(upgrades=False))
    h.send(UPGRADE)
    up = h.upstream().accept()
    assert b"Upgrade" not in up.received()
    up.respond(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
    assert h.response().startswith(b"HTTP/1.1 426 ")


def test_tunnel_idle_timeout() -> None:
    """A tunnel carrying nothing for the idle timeout is closed; traffic keeps it open."""
    h = Harness(ProxyConfig(tunnel_idle_timeout=100))
    h.send(UPGRADE)
    up = h.upstream().accept()
    up.respond(SWITCHED)
    h.reactor.advance(60)
    h.send(b"ping")
    h.reactor.advance(60)
    assert not up.transport.disconnecting
    h.reactor.advance(40)
    assert up.transport.disconnecting and h.client.disconnecting


def make_tunnel(idle: float = 10) -> tuple[Tunnel, StringTransport, StringTransport, Clock]:
    client, upstream, clock = StringTransport(), StringTransport(), Clock()
    return Tunnel(client, upstream, clock, idle, "test"), client, upstream, clock


def test_tunnel_backpressure() -> None:
    """A full client buffer pauses upstream reads; a full upstream buffer pauses client reads; both resume."""
    tunnel, client, upstream, _ = make_tunnel()
    tunnel.clientFull()
    assert upstream.producerState == "paused"
    tunnel.clientDrained()
    assert upstream.producerState == "producing"
    upstream.producer.pauseProducing()  # what the upstream transport does when its buffer is full
    assert client.producerState == "paused"
    upstream.producer.resumeProducing()
    assert client.producerState == "producing"


def test_tunnel_counts_and_closes_once() -> None:
    """Bytes are counted each way; a close is done once and later bytes are dropped."""
    tunnel, client, upstream, _ = make_tunnel()
    tunnel.fromClient(b"abc")
    tunnel.fromUpstream(b"de")
    assert (tunnel.sent_up, tunnel.sent_down) == (3, 2)
    assert (upstream.value(), client.value()) == (b"abc", b"de")
    with CapturedLog() as captured:
        tunnel.upstreamLost()
        tunnel.clientLost()
    tunnel.fromClient(b"late")
    assert client.disconnecting and upstream.value() == b"abc"
    assert captured.text().count("tunnel test closed: the upstream closed the connection; 3 bytes up, 2 bytes down") == 1


def test_tunnel_idle_is_lazy() -> None:
    """The idle deadline counts from the last byte, either way, with one timer at a time."""
    tunnel, client, upstream, clock = make_tunnel(idle=10)
    clock.advance(9)
    tunnel.fromUpstream(b"x")
    clock.advance(9.9)
    assert len(clock.getDelayedCalls()) == 1 and not client.disconnecting
    clock.advance(0.1)
    assert client.disconnecting and upstream.disconnecting
