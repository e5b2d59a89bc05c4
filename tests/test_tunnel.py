"""
The byte tunnel on its own (StringTransports, a Clock, Twisted's FileDescriptor buffer): bytes and counts,
backpressure both ways through the producers it registers, closing from either side or at shutdown, the idle
deadline.
"""

from __future__ import annotations

from twisted.internet.main import CONNECTION_DONE
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from _harness import CapturedLog, SocketlessTransport
from txrevproxy._tunnel import Tunnel


def make_tunnel(idle: float = 10, client: object = None) -> tuple[Tunnel, StringTransport, StringTransport, Clock]:
    client = client if client is not None else StringTransport()
    upstream, clock = StringTransport(), Clock()
    return Tunnel(client, upstream, clock, idle, "test"), client, upstream, clock  # type: ignore[return-value]


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
        assert captured.text().count(f"tunnel test closed: the {side} closed the connection; 3 bytes up, 2 bytes down") == 1


def test_slow_client_closed_after_its_bytes() -> None:
    """The upstream closing while the client's buffer is full: the client gets every byte, then its connection closes."""
    client = SocketlessTransport()
    tunnel, _, upstream, _ = make_tunnel(client=client)
    data = bytes(range(256)) * 1024  # 256 KiB: over the transport's 64 KiB buffer
    tunnel.fromUpstream(data)
    assert client.producerPaused and upstream.producerState == "paused"
    tunnel.upstreamLost()
    assert client.disconnecting and client.producer is None
    assert client.drain() is CONNECTION_DONE
    assert client.sent == data


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
