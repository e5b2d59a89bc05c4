"""
The in-memory network under the trial helpers: delivery, backpressure, closing and connection attempts.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase

from txrevproxy._testing.memory import HIGH_WATER, SEGMENT, MemoryNetwork, Peer


class Recorder(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: object) -> None:
        self.lost = reason


class Producer:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class MemoryNetworkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.network = MemoryNetwork()
        self.servers: list[Recorder] = []
        self.network.listen("127.0.0.1", 80, Factory.forProtocol(self._server))

    def _server(self) -> Recorder:
        server = Recorder()
        self.servers.append(server)
        return server

    def connect(self, port: int = 80) -> object:
        endpoint = TCP4ClientEndpoint(self.network.reactor, "127.0.0.1", port, timeout=5)
        d = endpoint.connect(Factory.forProtocol(Recorder))
        self.network.flush()
        return d

    def test_bytes_cross(self) -> None:
        """Bytes written on one end arrive at the other, both ways, with the addresses of a TCP connection."""
        client = self.successResultOf(self.connect())
        server = self.servers[0]
        client.transport.write(b"ping")
        server.transport.write(b"pong")
        self.network.flush()
        self.assertEqual((server.data, client.data), (b"ping", b"pong"))
        self.assertEqual(client.transport.getPeer(), server.transport.getHost())
        self.assertEqual(server.transport.getPeer().host, "127.0.0.1")

    def test_paused_reader_gets_nothing(self) -> None:
        """While an end has paused its reads nothing is delivered to it; resuming delivers what waited."""
        client = self.successResultOf(self.connect())
        server = self.servers[0]
        server.transport.pauseProducing()
        client.transport.write(b"waiting")
        self.network.flush()
        self.assertEqual(server.data, b"")
        server.transport.resumeProducing()
        self.network.flush()
        self.assertEqual(server.data, b"waiting")

    def test_full_buffer_pauses_the_writer(self) -> None:
        """Unread bytes beyond the high-water mark pause the writer's producer; a drained buffer resumes it."""
        client = self.successResultOf(self.connect())
        server = self.servers[0]
        producer = Producer()
        client.transport.registerProducer(producer, True)
        server.transport.pauseProducing()
        client.transport.write(b"x" * HIGH_WATER)
        self.assertEqual(producer.calls, [])
        client.transport.write(b"x")
        self.assertEqual(producer.calls, ["pause"])
        server.transport.resumeProducing()
        self.network.flush()
        self.assertEqual(producer.calls, ["pause", "resume"])
        self.assertEqual(len(server.data), HIGH_WATER + 1)

    def test_delivery_in_segments(self) -> None:
        """A large write arrives in pieces of at most one segment, as from a socket."""
        client = self.successResultOf(self.connect())
        sizes: list[int] = []
        self.servers[0].dataReceived = lambda data: sizes.append(len(data))  # type: ignore[method-assign]
        client.transport.write(b"x" * (2 * SEGMENT + 1))
        self.network.flush()
        self.assertEqual(sizes, [SEGMENT, SEGMENT, 1])

    def test_close_after_buffered_bytes(self) -> None:
        """loseConnection delivers what was written first; both ends then see a clean close."""
        client = self.successResultOf(self.connect())
        server = self.servers[0]
        server.transport.write(b"last words")
        server.transport.loseConnection()
        self.network.flush()
        self.assertEqual(client.data, b"last words")
        client.lost.trap(ConnectionDone)
        server.lost.trap(ConnectionDone)

    def test_abort_is_a_reset(self) -> None:
        """abortConnection drops unsent bytes; the peer sees the connection lost, not closed, and the aborting end
        sees it aborted, as on Twisted's TCP transports."""
        client = self.successResultOf(self.connect())
        server = self.servers[0]
        server.transport.write(b"never")
        server.transport.abortConnection()
        self.network.flush()
        self.assertEqual(client.data, b"")
        client.lost.trap(ConnectionLost)
        server.lost.trap(ConnectionAborted)

    def test_a_paused_producer_holds_a_close_open(self) -> None:
        """As on Twisted's TCP transports, a drained buffer resumes a paused producer instead of closing: the
        connection stays open until that producer is unregistered."""
        client = self.successResultOf(self.connect())
        server = self.servers[0]
        producer = Producer()
        server.transport.registerProducer(producer, True)
        client.transport.pauseProducing()
        server.transport.write(b"x" * (HIGH_WATER + 1))
        server.transport.loseConnection()
        client.transport.resumeProducing()
        self.network.flush()
        self.assertEqual((producer.calls, client.lost), (["pause", "resume"], None))
        self.network.advance(60)
        self.assertIsNone(client.lost)
        server.transport.unregisterProducer()
        self.network.flush()
        self.assertEqual(client.data, b"x" * (HIGH_WATER + 1))
        client.lost.trap(ConnectionDone)

    def test_a_closing_end_reads_nothing(self) -> None:
        """Once an end has called loseConnection it is given no more bytes (Twisted stops reading): they are
        dropped, and its close goes ahead."""
        client = self.successResultOf(self.connect())
        server = self.servers[0]
        server.transport.loseConnection()
        client.transport.write(b"unread")
        self.network.flush()
        self.assertEqual(server.data, b"")
        server.lost.trap(ConnectionDone)

    def test_attempts_are_recorded_and_completed_by_the_test(self) -> None:
        """Every attempt is recorded with its client's bind address; one left hanging is accepted, with a server of
        the test's own, or refused; one the client gave up on is cancelled, never connected."""
        self.network.set_mode("127.0.0.1", 81, "hang")
        reactor = self.network.reactor
        accepted, refused, cancelled = (
            reactor.connectTCP("127.0.0.1", 81, ClientFactory.forProtocol(Recorder), bindAddress=("10.0.0.1", 5000))
            for _ in range(3)
        )
        cancelled.stopConnecting()
        first, second, third = self.network.attempts_to("127.0.0.1", 81)
        self.assertEqual([first.connector, second.connector, third.connector], [accepted, refused, cancelled])
        peer = Peer()
        connection = self.network.accept(first, Factory.forProtocol(lambda: peer))
        self.network.refuse(second)
        self.network.flush()
        self.assertEqual([first.outcome, second.outcome, third.outcome], ["connected", "refused", "cancelled"])
        self.assertIs(first.connection, connection)
        self.assertEqual(peer.transport.getPeer(), IPv4Address("TCP", "10.0.0.1", 5000))
        connection.client.write(b"hello")
        self.network.flush()
        self.assertEqual(peer.received, b"hello")
        self.assertRaises(ValueError, self.network.refuse, third)

    def test_nothing_listening_refuses(self) -> None:
        """A connection to an address nobody listens on is refused."""
        self.failureResultOf(self.connect(port=81), ConnectionRefusedError)

    def test_refuse_mode(self) -> None:
        """In refuse mode a listening address refuses connections."""
        self.network.set_mode("127.0.0.1", 80, "refuse")
        self.failureResultOf(self.connect(), ConnectionRefusedError)
        self.assertEqual(self.servers, [])

    def test_hang_mode(self) -> None:
        """In hang mode a connection attempt stays pending (only the connecting side's own timeout would end it)."""
        self.network.set_mode("127.0.0.1", 80, "hang")
        d = self.connect()
        self.network.advance(4)
        self.assertNoResult(d)
        self.network.set_mode("127.0.0.1", 80, "accept")
        self.network.flush()
        self.successResultOf(d)

    def test_unknown_mode(self) -> None:
        """A mode other than accept, refuse and hang is an error."""
        self.assertRaises(ValueError, self.network.set_mode, "127.0.0.1", 80, "drop")

    def test_time_passes_only_when_advanced(self) -> None:
        """flush runs what is due now; a call due later waits for advance."""
        calls: list[str] = []
        self.network.reactor.callLater(0, calls.append, "now")
        self.network.reactor.callLater(1, calls.append, "later")
        self.network.flush()
        self.assertEqual(calls, ["now"])
        self.network.advance(1)
        self.assertEqual(calls, ["now", "later"])
