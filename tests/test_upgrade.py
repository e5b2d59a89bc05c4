"""
Protocol upgrades through the proxy in memory: which requests offer one, what goes upstream, the 101 rules, the
hand-off from HTTP to a tunnel on both connections, deadlines, shutdown and bounded buffers (the tunnel module on
its own is tested in test_tunnel.py).
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IPushProducer, ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.web.server import Site
from zope.interface import implementer, implementer_only

from tests._harness import CapturedLog, Harness, head_and_body, header_lines
from txrevproxy import ProxyConfig
from txrevproxy._http.headers import upgrade_accepted, upgrade_offer
from txrevproxy._server.channel import ProxyChannel
from txrevproxy._server.config import ClientConfig
from txrevproxy._testing.memory import HIGH_WATER, SEGMENT, MemoryTransport
from txrevproxy._upstream.pool import UpstreamAddress
from txrevproxy._upstream.protocol import UpstreamProtocol
from txrevproxy.testing import MemoryProxy

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


def test_h2c_and_http10_are_plain_requests() -> None:
    """An h2c-only offer, or an HTTP/1.0 client's Upgrade, is dropped: the request goes upstream as a plain one."""
    for request in (
        (
            b"GET / HTTP/1.1\r\nHost: e\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        ),
        b"GET / HTTP/1.0\r\nHost: e\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    ):
        h = Harness()
        h.send(request)
        sent = h.upstream().accept().received().lower()
        assert b"upgrade" not in sent and b"http2-settings" not in sent


def test_h2c_left_out_of_an_offer() -> None:
    """An offer of h2c and another protocol forwards the other one alone."""
    h = Harness()
    h.send(b"GET / HTTP/1.1\r\nHost: e\r\nConnection: upgrade\r\nUpgrade: h2c, websocket\r\n\r\n")
    assert b"Upgrade: websocket\r\n" in h.upstream().accept().received()


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
    """A final response to an upgrade request is relayed as HTTP and the client connection reads the next request;
    the upstream connection that carried the offer is closed, not pooled, and the next request gets a new one."""
    h = Harness()
    h.send(UPGRADE + b"GET /next HTTP/1.1\r\nHost: e\r\n\r\n")
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno")
    assert h.response().startswith(b"HTTP/1.1 200 OK")
    assert up.transport.disconnecting and b"/next" not in up.received()
    assert h.attempts == 2
    second = h.upstream().accept()
    assert second.received().startswith(b"GET /next HTTP/1.1\r\n")
    second.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes")
    assert h.response().endswith(b"yes")
    assert h.resource.pool.idle_count(UpstreamAddress("127.0.0.1", 8000)) == 1


def test_upgrades_off_keep_the_connection_poolable() -> None:
    """With upgrades off, the request is a plain one and its upstream connection goes back to the pool."""
    h = Harness(ProxyConfig(upgrades=False))
    h.send(UPGRADE)
    h.upstream().accept().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert h.resource.pool.idle_count(UpstreamAddress("127.0.0.1", 8000)) == 1


def test_unoffered_protocol_is_502() -> None:
    """A 101 to a protocol the client did not offer is a 502."""
    h = Harness()
    h.send(UPGRADE)
    with CapturedLog() as captured:
        h.upstream().accept().respond(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: irc\r\nConnection: upgrade\r\n\r\n"
        )
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
    h.advance(60)
    h.send(b"ping")
    h.advance(60)
    assert not up.transport.disconnecting
    h.advance(40)
    assert up.transport.disconnecting and h.client.disconnecting


def test_client_deadlines_do_not_fire_in_a_tunnel() -> None:
    """The client's idle, head and body timeouts do not apply to a tunnel (with no idle timeout of its own)."""
    config = ClientConfig(head_timeout=1, body_timeout=1, send_timeout=1)
    h = Harness(ProxyConfig(response_timeout=1, tunnel_idle_timeout=0), client=config)
    h.send(UPGRADE)
    up = h.upstream().accept()
    up.respond(SWITCHED)
    h.send(b"GET / HTTP/1.1\r\n")  # a partial "head", now just bytes
    h.advance(10**5)
    assert not h.client.disconnecting and not up.transport.disconnecting
    assert [call.func for call in h.reactor.getDelayedCalls()] == [h.site._updateLogDateTime]  # the site's own


def test_a_tunnel_client_reading_nothing_for_the_send_timeout_is_aborted() -> None:
    """In a tunnel the client's send timeout holds: a client whose buffer stays full that long (bytes still going
    up, which keeps the tunnel from being idle) has both connections aborted, with a log line."""
    h = Harness(ProxyConfig(tunnel_idle_timeout=5), client=ClientConfig(send_timeout=10))
    h.send(UPGRADE)
    up = h.upstream().accept()
    up.respond(SWITCHED)
    h.client.producer.pauseProducing()  # a client not reading: its transport pauses the producer registered on it
    assert not up.transport.reading
    with CapturedLog() as captured:
        for _ in range(4):
            h.advance(2.4)
            h.send(b"ping")
        assert not h.client.disconnecting
        h.advance(0.5)
    assert h.client.aborted and up.transport.aborted
    assert "read nothing for 10s: closed" in captured.text()


def test_pool_close_closes_tunnels() -> None:
    """Closing the pool (the proxy stopping) closes every tunnel, both sides, and forgets it once upstream is gone."""
    h, up = switched()
    pool = h.resource.pool
    assert len(pool.tunnelled) == 1
    with CapturedLog() as captured:
        pool.close()
    assert h.client.disconnecting and up.transport.disconnecting
    assert "closed: the proxy is shutting down" in captured.text()
    up.close()
    assert not pool.tunnelled


def test_101_while_stopping_closes_at_once() -> None:
    """A 101 arriving after the pool was closed still reaches the client, then the tunnel is closed."""
    h = Harness()
    h.send(UPGRADE)
    up = h.upstream().accept()
    h.resource.pool.close()
    up.respond(SWITCHED + b"hello")
    assert h.response().startswith(b"HTTP/1.1 101 ") and h.response().endswith(b"hello")
    assert h.client.disconnecting and up.transport.disconnecting


def test_plain_site_drops_upgrades() -> None:
    """Under a plain twisted.web Site, Upgrade is dropped and a 101 is a 502, as before upgrades were relayed."""
    h = Harness(site_class=Site)
    h.send(UPGRADE)
    up = h.upstream().accept()
    assert b"Upgrade" not in up.received() and b"upgrade" not in up.received()
    up.respond(SWITCHED)
    assert h.response().startswith(b"HTTP/1.1 502 ")


def test_slow_client_gets_everything_then_closes() -> None:
    """On a transport that behaves as Twisted's, a tunnel whose upstream closes while the client is not reading sends
    the client every byte and then closes its connection (the HTTP channel no longer holds it open as a paused
    producer)."""
    h = Harness()
    h.send(UPGRADE)
    up = h.upstream().accept()
    up.respond(SWITCHED)
    h.clients[0].stop_reading()
    data = bytes(range(256)) * 512  # 128 KiB, two segments: past the transport's 64 KiB buffer, all read by the proxy
    up.respond(data)
    assert h.client.producer_paused and not up.transport.reading
    up.close()
    h.clients[0].resume_reading()
    assert h.clients[0].peer.closed and h.clients[0].peer.reason.check(ConnectionDone)
    assert h.response().endswith(data) and h.response().startswith(b"HTTP/1.1 101 ")


@implementer_only(ITransport, IConsumer)
class ConsumerOnlyTransport(StringTransport):
    """
    A transport that is a consumer but no ``IPushProducer``, as Twisted's TLS transport is: ``HTTPChannel`` cannot
    register itself on it, so it never hears of a full client buffer.
    """


def test_backpressure_on_a_transport_like_tls() -> None:
    """On a client transport like TLS's, the tunnel registers its own producer: a slow client pauses the upstream."""
    h = Harness()
    client = ConsumerOnlyTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 50000))
    channel = h.site.buildProtocol(None)
    channel.makeConnection(client)
    assert client.producer is None
    channel.dataReceived(UPGRADE)
    up = h.upstream().accept()
    up.respond(SWITCHED)
    client.producer.pauseProducing()
    assert not up.transport.reading
    client.producer.resumeProducing()
    assert up.transport.reading


# -- bounded buffers, through the proxy over TCP in memory ------------------------------------------------------

CHUNK = bytes(range(256)) * 256  # 64 KiB


@implementer(IPushProducer)
class RawOrigin(Protocol):
    """
    Answers an upgrade with 101, then pushes ``chunks`` chunks down as fast as its transport takes them (a streaming
    producer, as a WebSocket server would be) and keeps what comes up.
    """

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.pushed = 0
        self.paused = False
        self.switched = False
        self.received = bytearray()

    def dataReceived(self, data: bytes) -> None:
        if self.switched:
            self.received += data
            return
        self.switched = True  # the request head (sent alone)
        self.transport.write(SWITCHED)
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.pushed < self.chunks:
            self.pushed += 1
            self.transport.write(CHUNK)

    def stopProducing(self) -> None:
        pass


def proxy_transports(proxy: MemoryProxy) -> tuple[MemoryTransport, MemoryTransport]:
    """The proxy's transport to the client, and its transport to the origin."""
    ends = [end for connection in proxy.network.open_connections() for end in (connection.client, connection.server)]
    [to_client] = [end for end in ends if isinstance(end.protocol, ProxyChannel)]
    [to_origin] = [end for end in ends if isinstance(getattr(end.protocol, "_wrappedProtocol", None), UpstreamProtocol)]
    return to_client, to_origin


def test_slow_client_bounds_the_proxy_buffers() -> None:
    """A client that stops reading stops the origin: the proxy buffers at most ~64 KiB for it; all arrives later."""
    origin = RawOrigin(chunks=64)  # 4 MiB
    proxy = MemoryProxy()
    proxy.network.listen(proxy.ORIGIN_HOST, proxy.ORIGIN_PORT, Factory.forProtocol(lambda: origin))
    client = proxy.connect()
    client.pause()
    client.send(UPGRADE)
    to_client, to_origin = proxy_transports(proxy)
    assert origin.paused and origin.pushed < 8
    assert len(to_client.outgoing) <= HIGH_WATER + SEGMENT + len(SWITCHED)
    assert not to_origin.reading
    client.resume()
    head, body = head_and_body(client.received())
    assert head.startswith(b"HTTP/1.1 101 ") and origin.pushed == 64 and body == CHUNK * 64


def test_slow_origin_bounds_the_proxy_buffers() -> None:
    """An origin that stops reading stops the client's upload: the proxy buffers at most about 64 KiB for it."""
    origin = RawOrigin(chunks=0)
    proxy = MemoryProxy()
    proxy.network.listen(proxy.ORIGIN_HOST, proxy.ORIGIN_PORT, Factory.forProtocol(lambda: origin))
    client = proxy.connect()
    client.send(UPGRADE)
    assert client.received().startswith(b"HTTP/1.1 101 ")
    origin.transport.pauseProducing()  # the origin stops reading
    client.send(CHUNK * 64)  # 4 MiB
    to_client, to_origin = proxy_transports(proxy)
    assert len(to_origin.outgoing) <= HIGH_WATER + SEGMENT
    assert not to_client.reading and len(origin.received) == 0
    origin.transport.resumeProducing()
    proxy.flush()
    assert origin.received == CHUNK * 64
