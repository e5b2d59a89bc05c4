"""
TCP in memory, for tests: listeners and connections on a ``MemoryReactorClock``, no sockets.

A :class:`MemoryNetwork` wraps a ``MemoryReactorClock``. Servers listen on it by address (:meth:`listen`); clients
connect the usual way, through ``reactor.connectTCP`` or any endpoint built on it, which the memory reactor merely
records. :meth:`MemoryNetwork.flush` then does what a real network would: completes (or refuses, or leaves hanging)
each recorded connection attempt, carries bytes both ways, runs what is due on the clock *now*, and closes
connections, over and over until nothing moves. Time passes only through :meth:`MemoryNetwork.advance`.

The transports behave like TCP ones where the proxy cares: ``pauseProducing`` stops delivery to the protocol (the
bytes wait "in the network"), writes beyond :data:`HIGH_WATER` unread bytes pause a registered streaming producer
and a drained buffer resumes it, ``loseConnection`` closes after the buffered bytes are delivered while
``abortConnection`` drops them and the peer sees a reset (``ConnectionLost``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IConsumer, IPushProducer, ITCPTransport
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer

#: Unread bytes in one direction above which a writer's streaming producer is paused.
HIGH_WATER = 64 * 1024
#: Bytes handed to ``dataReceived`` at a time (what one ``recv`` would give).
SEGMENT = 64 * 1024
#: Steps after which :meth:`MemoryNetwork.flush` gives up: something keeps generating work at the same instant.
MAX_STEPS = 100_000

ACCEPT, REFUSE, HANG = "accept", "refuse", "hang"


@implementer(ITCPTransport, IConsumer, IPushProducer)
class MemoryTransport:
    """
    One end of a :class:`MemoryConnection`: what its protocol writes waits in :attr:`outgoing` until the network
    delivers it to the other end.
    """

    disconnecting = False
    disconnected = False
    connected = True

    def __init__(self, protocol: object, host: IPv4Address, peer: IPv4Address) -> None:
        self.protocol = protocol
        self.host = host
        self.peer = peer
        self.outgoing = bytearray()
        self.reading = True  # False while the protocol has paused us (its reads)
        self.aborted = False
        self.producer: object = None
        self.streaming = False
        self.producer_paused = False  # we paused self.producer for a full buffer

    # ITransport

    def write(self, data: bytes) -> None:
        if self.disconnecting or self.disconnected:
            return
        self.outgoing += data
        if (
            self.producer is not None
            and self.streaming
            and not self.producer_paused
            and len(self.outgoing) > HIGH_WATER
        ):
            self.producer_paused = True
            self.producer.pauseProducing()  # type: ignore[attr-defined]

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self.disconnecting = True

    def abortConnection(self) -> None:
        self.outgoing.clear()
        self.aborted = True
        self.disconnecting = True

    def getPeer(self) -> IPv4Address:
        return self.peer

    def getHost(self) -> IPv4Address:
        return self.host

    # ITCPTransport options: accepted and ignored.

    def getTcpNoDelay(self) -> bool:
        return True

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def getTcpKeepAlive(self) -> bool:
        return False

    def setTcpKeepAlive(self, enabled: bool) -> None:
        pass

    def loseWriteConnection(self) -> None:
        self.loseConnection()

    # IConsumer

    def registerProducer(self, producer: object, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError(f"cannot register producer {producer!r}: {self.producer!r} is registered")
        if self.disconnected:
            producer.stopProducing()  # type: ignore[attr-defined]
            return
        self.producer, self.streaming, self.producer_paused = producer, streaming, False
        if not streaming:
            producer.resumeProducing()  # type: ignore[attr-defined]

    def unregisterProducer(self) -> None:
        self.producer = None

    # IPushProducer: the protocol pausing its own reads.

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True

    def stopProducing(self) -> None:
        self.loseConnection()

    def drained(self) -> None:
        """
        The peer took our buffered bytes: a producer we paused may go on (a pull producer is asked for more).
        """
        producer = self.producer
        if producer is None or self.outgoing:
            return
        if self.streaming:
            if self.producer_paused:
                self.producer_paused = False
                producer.resumeProducing()  # type: ignore[attr-defined]
        else:
            producer.resumeProducing()  # type: ignore[attr-defined]

    def lost(self, reason: Failure) -> None:
        self.disconnected = True
        self.connected = False
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.stopProducing()  # type: ignore[attr-defined]
        self.protocol.connectionLost(reason)  # type: ignore[attr-defined]


class MemoryConnection:
    """
    A connection between a client and a server protocol; :meth:`step` moves what can move.
    """

    def __init__(self, client: MemoryTransport, server: MemoryTransport) -> None:
        self.client = client
        self.server = server
        self.closed = False

    def step(self) -> bool:
        """
        Deliver one segment each way and close the connection if an end asked for it; whether anything happened.
        """
        if self.closed:
            return False
        moved = _deliver(self.client, self.server) | _deliver(self.server, self.client)
        if moved:
            return True
        for closing, other in ((self.client, self.server), (self.server, self.client)):
            if closing.disconnecting and (closing.aborted or not closing.outgoing):
                self._close(closing, other)
                return True
        return False

    def _close(self, closing: MemoryTransport, other: MemoryTransport) -> None:
        self.closed = True
        other.outgoing.clear()
        closing.lost(Failure(ConnectionDone("closed by this side")))
        reason = ConnectionLost("connection reset by peer") if closing.aborted else ConnectionDone("closed by peer")
        other.lost(Failure(reason))


def _deliver(sender: MemoryTransport, receiver: MemoryTransport) -> bool:
    if not sender.outgoing or not receiver.reading or receiver.disconnected:
        return False
    data = bytes(sender.outgoing[:SEGMENT])
    del sender.outgoing[:SEGMENT]
    receiver.protocol.dataReceived(data)  # type: ignore[attr-defined]
    if len(sender.outgoing) <= HIGH_WATER // 2:
        sender.drained()
    return True


class MemoryNetwork:
    """
    Listeners and connections on one ``MemoryReactorClock`` (made here unless given).

    :attr:`mode` decides what happens to a connection attempt to ``(host, port)``: ``"accept"`` (when something
    listens there; otherwise it is refused), ``"refuse"`` or ``"hang"`` (left pending: only a timeout ends it).
    """

    def __init__(self, reactor: MemoryReactorClock | None = None) -> None:
        self.reactor = reactor if reactor is not None else MemoryReactorClock()
        self.listeners: dict[tuple[str, int], object] = {}
        self.connections: list[MemoryConnection] = []
        self.modes: dict[tuple[str, int], str] = {}
        self._ports = itertools.count(40000)

    def listen(self, host: str, port: int, factory: object) -> IPv4Address:
        """
        Serve ``factory``'s protocols at ``host:port``.
        """
        self.listeners[(host, port)] = factory
        factory.doStart()  # type: ignore[attr-defined]
        return IPv4Address("TCP", host, port)

    def set_mode(self, host: str, port: int, mode: str) -> None:
        """
        What connection attempts to ``host:port`` get from now on: ``"accept"``, ``"refuse"`` or ``"hang"``.
        """
        if mode not in (ACCEPT, REFUSE, HANG):
            raise ValueError(f"unknown connection mode {mode!r}")
        self.modes[(host, port)] = mode

    def open_connections(self) -> Iterator[MemoryConnection]:
        return (connection for connection in self.connections if not connection.closed)

    def flush(self) -> None:
        """
        Run everything that can happen without time passing: due calls, connection attempts, bytes, closes.
        """
        for _ in range(MAX_STEPS):
            self.reactor.advance(0)
            moved = self._complete_attempts()
            for connection in self.connections:
                moved = connection.step() or moved
            self.connections = [connection for connection in self.connections if not connection.closed]
            if not moved and not self._due():
                return
        raise RuntimeError(f"the in-memory network did not settle after {MAX_STEPS} steps")

    def advance(self, seconds: float) -> None:
        """
        Let ``seconds`` pass on the clock, then :meth:`flush`.
        """
        self.flush()
        self.reactor.advance(seconds)
        self.flush()

    def _due(self) -> bool:
        now = self.reactor.seconds()
        return any(call.getTime() <= now for call in self.reactor.getDelayedCalls())

    def _complete_attempts(self) -> bool:
        reactor = self.reactor
        moved = False
        pending = list(zip(reactor.tcpClients, reactor.connectors, strict=False))
        reactor.tcpClients.clear()
        reactor.connectors.clear()
        for attempt, connector in pending:
            host, port, factory = attempt[0], attempt[1], attempt[2]
            mode = self.modes.get((host, port), ACCEPT)
            server_factory = self.listeners.get((host, port))
            if mode == HANG:
                reactor.tcpClients.append(attempt)
                reactor.connectors.append(connector)
                continue
            moved = True
            if mode == REFUSE or server_factory is None:
                factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError(f"{host}:{port}")))
                continue
            self._connect(host, port, factory, server_factory)
        return moved

    def _connect(self, host: str, port: int, client_factory: object, server_factory: object) -> None:
        server_address = IPv4Address("TCP", host, port)
        client_address = IPv4Address("TCP", "127.0.0.1", next(self._ports))
        server = server_factory.buildProtocol(client_address)  # type: ignore[attr-defined]
        client = client_factory.buildProtocol(server_address)  # type: ignore[attr-defined]
        if server is None:  # the server refused the connection (closed it unread)
            client_factory.clientConnectionFailed(None, Failure(ConnectionRefusedError("closed at accept")))  # type: ignore[attr-defined]
            return
        server_end = MemoryTransport(server, server_address, client_address)
        client_end = MemoryTransport(client, client_address, server_address)
        self.connections.append(MemoryConnection(client_end, server_end))
        server.makeConnection(server_end)
        client.makeConnection(client_end)
