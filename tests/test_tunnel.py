"""
The byte tunnel on its own (StringTransports and a Clock; a client connection on the in-memory network where the
client's buffer and the close after it matter): bytes and counts, backpressure both ways through the producers it
registers, closing from either side or at shutdown, the idle deadline, the send deadlines.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from tests._harness import CapturedLog
from txrevproxy._net.tunnel import Tunnel
from txrevproxy._testing.memory import MemoryNetwork, MemoryTransport, Peer


def make_tunnel(
    idle: float = 10, client: object = None, send: tuple[float, float] = (0.0, 0.0)
) -> tuple[Tunnel, StringTransport, StringTransport, Clock]:
    client = client if client is not None else StringTransport()
    upstream, clock = StringTransport(), Clock()
    return Tunnel(client, upstream, clock, idle, "test", send), client, upstream, clock  # type: ignore[return-value]


def memory_client() -> tuple[MemoryNetwork, MemoryTransport, Peer]:
    """
    A client connection in memory: the network, the proxy's end (the tunnel's client transport; its own protocol
    ignores what arrives) and the client's end.
    """
    network = MemoryNetwork()
    network.listen("127.0.0.1", 8080, Factory.forProtocol(Protocol))
    peer = Peer()
    network.reactor.connectTCP("127.0.0.1", 8080, ClientFactory.forProtocol(lambda: peer))
    network.flush()
    [connection] = network.connections
    return network, connection.server, peer


def test_bytes_and_counts() -> None:
    """Bytes go to the other side as they come and are counted each way."""
    tunnel, client, upstream, _ = make_tunnel()
    tunnel.fromClient(b"abc")
    tunnel.fromUpstream(b"de")
    tunnel.fromClient(b"")
    assert (upstream.value(), client.value()) == (b"abc", b"de")
    assert (tunnel.sent_up, tunnel.sent_down) == (3, 2)


def test_backpressure_both_ways() -> None:
    """A full client buffer pauses upstream reads, a full upstream buffer pauses client reads; both resume."""
    _tunnel, client, upstream, _ = make_tunnel()
    assert client.streaming and upstream.streaming
    client.producer.pauseProducing()  # what the client transport does when its send buffer is full
    assert (upstream.producerState, client.producerState) == ("paused", "producing")
    client.producer.resumeProducing()
    assert upstream.producerState == "producing"
    upstream.producer.pauseProducing()
    assert (client.producerState, upstream.producerState) == ("paused", "producing")
    upstream.producer.resumeProducing()
    assert client.producerState == "producing"


def test_close_from_either_side() -> None:
    """A side closing closes the other once, unregisters both producers, logs the counts, and drops later bytes."""
    for lost, other_name in (("upstreamLost", "client"), ("clientLost", "upstream")):
        tunnel, client, upstream, _ = make_tunnel()
        tunnel.fromClient(b"abc")
        tunnel.fromUpstream(b"de")
        with CapturedLog() as captured:
            getattr(tunnel, lost)()
            tunnel.clientLost()
            tunnel.upstreamLost()
        other, closed = (client, upstream) if other_name == "client" else (upstream, client)
        assert other.disconnecting and not closed.disconnecting
        assert client.producer is None and upstream.producer is None
        tunnel.fromClient(b"late")
        tunnel.fromUpstream(b"late")
        assert (upstream.value(), client.value()) == (b"abc", b"de")
        side = "upstream" if lost == "upstreamLost" else "client"
        assert (
            captured.text().count(f"tunnel test closed: the {side} closed the connection; 3 bytes up, 2 bytes down")
            == 1
        )


def test_slow_client_closed_after_its_bytes() -> None:
    """The upstream closing while the client's buffer is full: the client gets every byte, then is closed."""
    network, client, peer = memory_client()
    tunnel, _, upstream, _ = make_tunnel(client=client)
    data = bytes(range(256)) * 1024  # 256 KiB: over the transport's 64 KiB buffer
    tunnel.fromUpstream(data)
    assert client.producer_paused and upstream.producerState == "paused"
    tunnel.upstreamLost()
    assert client.disconnecting and client.producer is None
    network.flush()  # the client reads
    assert peer.closed and peer.reason.check(ConnectionDone)
    assert peer.received == data


def test_pause_after_close_is_ignored() -> None:
    """A transport pausing its (already unregistered) producer after the close does not pause the other side."""
    tunnel, client, upstream, _ = make_tunnel()
    producer = client.producer
    tunnel.clientLost()
    producer.pauseProducing()
    assert upstream.producerState == "producing"


def test_shutdown_closes_both() -> None:
    """At shutdown both sides are closed (after their buffered bytes), with a log line."""
    tunnel, client, upstream, clock = make_tunnel()
    with CapturedLog() as captured:
        tunnel.shutdown()
    assert client.disconnecting and upstream.disconnecting
    assert not (client.disconnected or upstream.disconnected)  # a close, not an abort
    assert "tunnel test closed: the proxy is shutting down" in captured.text()
    assert clock.getDelayedCalls() == []


def test_idle_deadline_is_lazy() -> None:
    """The idle deadline counts from the last byte, either way, with one timer at a time; then both are aborted."""
    tunnel, client, upstream, clock = make_tunnel(idle=10)
    clock.advance(9)
    tunnel.fromUpstream(b"x")
    clock.advance(9.9)
    assert len(clock.getDelayedCalls()) == 1 and not client.disconnecting
    with CapturedLog() as captured:
        clock.advance(0.1)
    assert client.disconnecting and upstream.disconnecting
    assert client.producer is None and upstream.producer is None
    assert "tunnel test idle for 10s: closed; 0 bytes up, 1 bytes down" in captured.text()


def test_no_idle_deadline() -> None:
    """An idle timeout of 0 sets no timer: a silent tunnel stays open."""
    _tunnel, client, _, clock = make_tunnel(idle=0)
    assert clock.getDelayedCalls() == []
    clock.advance(10**6)
    assert not client.disconnecting


def test_a_side_reading_nothing_for_its_send_timeout_aborts_both() -> None:
    """The upstream's buffer full for its send timeout (the client still sending, so never idle) aborts both, with
    a log line; the client's own timeout is another figure."""
    tunnel, client, upstream, clock = make_tunnel(idle=5, send=(30, 8))
    upstream.producer.pauseProducing()  # the upstream reads nothing: its transport pauses the producer on it
    with CapturedLog() as captured:
        for _ in range(7):
            clock.advance(1)
            tunnel.fromClient(b"x")
        assert not upstream.disconnecting
        clock.advance(1)
    assert client.disconnected and upstream.disconnected  # (aborted)
    assert "tunnel test upstream read nothing for 8s: closed; 7 bytes up, 0 bytes down" in captured.text()
    assert clock.getDelayedCalls() == []


def test_a_drained_buffer_starts_the_send_deadline_over() -> None:
    """A side whose buffer drains before its send timeout is not aborted; its next stall is timed from its start."""
    _tunnel, client, upstream, clock = make_tunnel(idle=0, send=(10, 10))
    client.producer.pauseProducing()
    clock.advance(9)
    client.producer.resumeProducing()
    clock.advance(5)
    client.producer.pauseProducing()
    clock.advance(9.9)
    assert not client.disconnecting
    clock.advance(0.1)
    assert client.disconnected and upstream.disconnected


def test_an_earlier_send_deadline_is_not_found_late() -> None:
    """A stall with a nearer deadline than the one already timed re-arms the timer: found on time."""
    _tunnel, client, upstream, clock = make_tunnel(idle=0, send=(60, 5))
    client.producer.pauseProducing()  # deadline at 60
    clock.advance(1)
    upstream.producer.pauseProducing()  # deadline at 6
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(5)
    assert client.disconnected and upstream.disconnected


def test_a_side_that_takes_not_its_last_bytes_is_aborted() -> None:
    """Once the upstream has gone, the client is closed after its bytes; a client taking none of them for its send
    timeout is aborted, with a log line."""
    network, client, peer = memory_client()
    peer.transport.pauseProducing()  # the client reads nothing
    tunnel, _, _upstream, clock = make_tunnel(client=client, send=(10, 10))
    tunnel.fromUpstream(bytes(256 * 1024))  # over the transport's buffer
    tunnel.upstreamLost()
    network.flush()
    assert client.disconnecting and not client.disconnected
    with CapturedLog() as captured:
        clock.advance(10)
    assert client.aborted
    assert "tunnel test: the client did not take its last bytes within 10s: aborted" in captured.text()


def test_a_side_that_closes_in_time_is_not_aborted() -> None:
    """A side being closed whose loss is reported within its send timeout cancels the timer."""
    tunnel, _client, _upstream, clock = make_tunnel(send=(10, 10))
    tunnel.shutdown()
    assert len(clock.getDelayedCalls()) == 1
    tunnel.clientLost()
    assert len(clock.getDelayedCalls()) == 1  # the upstream is still closing
    tunnel.upstreamLost()
    assert clock.getDelayedCalls() == []
