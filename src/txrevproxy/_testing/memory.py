"""
TCP in memory, for tests: listeners and connections on a ``MemoryReactorClock``, no sockets. The one in-memory
network: :mod:`txrevproxy.testing`'s ``MemoryProxy`` and txrevproxy's own unit tests both run on it.

A :class:`MemoryNetwork` wraps a ``MemoryReactorClock``. Servers listen on it by address (:meth:`listen`); clients
connect the usual way, through ``reactor.connectTCP`` (its ``bindAddress`` is the client's address) or any endpoint
built on it, which the memory reactor merely records. :meth:`MemoryNetwork.flush` then does what a real network
would: completes (or refuses, or leaves hanging) each recorded connection attempt, carries bytes both ways, runs what
is due on the clock *now*, and closes connections, over and over until nothing moves. Time passes only through
:meth:`MemoryNetwork.advance`. Every attempt is kept in :attr:`MemoryNetwork.attempts`; one left hanging can be
completed by the test itself (:meth:`MemoryNetwork.accept`, :meth:`MemoryNetwork.refuse`), with a :class:`Peer`
of its own to play the server.

The transports behave like Twisted's TCP ones (``FileDescriptor``) where the proxy cares: ``pauseProducing`` stops
delivery to the protocol (the bytes wait "in the network"), writes beyond :data:`HIGH_WATER` unread bytes pause a
registered streaming producer and a drained buffer resumes it, ``loseConnection`` stops reading and closes after the
buffered bytes are delivered, unless a pull producer or a paused streaming one is still registered (that one is
resumed instead, and the connection stays open until it is unregistered or writes again), while
``abortConnection`` drops them and the peer sees a reset (``ConnectionLost``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol as TypingProtocol
from typing import cast

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import (
    IConnector,
    IConsumer,
    IProducer,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    ITCPTransport,
)
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer

#: Unread bytes in one direction above which a writer's streaming producer is paused (``FileDescriptor.bufferSize``).
HIGH_WATER = 64 * 1024
#: Bytes handed to ``dataReceived`` at a time (what one ``recv`` would give).
SEGMENT = 64 * 1024
#: Steps after which :meth:`MemoryNetwork.flush` gives up: something keeps generating work at the same instant.
MAX_STEPS = 100_000

ACCEPT, REFUSE, HANG = "accept", "refuse", "hang"
#: What became of a :class:`ConnectionAttempt`.
PENDING, CONNECTED, REFUSED, CANCELLED = "pending", "connected", "refused", "cancelled"


class _StoppableConnector(TypingProtocol):
    stoppedConnecting: bool


def _gave_up(connector: IConnector) -> bool:
    # MemoryReactorClock's connectors record stopConnecting() in stoppedConnecting (IConnector does not say so).
    return cast(_StoppableConnector, connector).stoppedConnecting


@implementer(ITCPTransport, IConsumer, IPushProducer)
class MemoryTransport:
    """
    One end of a :class:`MemoryConnection`: what its protocol writes waits in :attr:`outgoing` until the network
    delivers it to the other end.
    """

    disconnecting = False
    disconnected = False
    connected = True

    def __init__(self, protocol: IProtocol, host: IPv4Address, peer: IPv4Address) -> None:
        self.protocol = protocol
        self.host = host
        self.peer = peer
        self.outgoing = bytearray()
        self.reading = True  # False while the protocol has paused us (its reads)
        self.aborted = False
        # A push producer, or a pull one (only ever paused when streaming, resumed and stopped either way).
        self.producer: IPushProducer | None = None
        self.streaming = False
        self.producer_paused = False  # we paused self.producer for a full buffer
        self.writing = False  # what Twisted's startWriting/stopWriting track: there is a write (or close) to do

    # ITransport

    def write(self, data: bytes) -> None:
        if self.aborted or self.disconnected or not data:
            return
        self.outgoing += data
        self.writing = True
        if (
            self.producer is not None
            and self.streaming
            and not self.producer_paused
            and len(self.outgoing) > HIGH_WATER
        ):
            self.producer_paused = True
            self.producer.pauseProducing()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if self.disconnecting or self.disconnected:
            return
        self.disconnecting = True
        self.writing = True

    def abortConnection(self) -> None:
        if self.disconnected:
            return
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

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError(f"cannot register producer {producer!r}: {self.producer!r} is registered")
        if self.disconnected:
            producer.stopProducing()
            return
        # (A pull producer is resumed and stopped, never paused: that happens only when streaming.)
        pushed = self.producer = cast(IPushProducer, producer)
        self.streaming, self.producer_paused = streaming, False
        if not streaming:
            pushed.resumeProducing()

    def unregisterProducer(self) -> None:
        self.producer = None
        if self.disconnecting and not self.disconnected:
            self.writing = True  # a close the producer held may happen now

    # IPushProducer: the protocol pausing its own reads.

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True

    def stopProducing(self) -> None:
        self.loseConnection()

    def drained(self) -> bool:
        """
        The peer took every buffered byte: what the end of Twisted's ``FileDescriptor.doWrite`` does then. A pull
        producer, or a streaming one we paused, is asked for more, and a connection being closed stays open for it;
        otherwise whether the connection, being closed, may close now.
        """
        self.writing = False
        producer = self.producer
        if producer is not None and (not self.streaming or self.producer_paused):
            self.producer_paused = False
            producer.resumeProducing()
            return False
        return self.disconnecting

    def lost(self, reason: Failure) -> None:
        self.disconnected = True
        self.connected = False
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.stopProducing()
        self.protocol.connectionLost(reason)


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
        Deliver one segment each way, or else let an end whose buffer is empty resume its producer or close; whether
        anything happened.
        """
        if self.closed:
            return False
        moved = _deliver(self.client, self.server) | _deliver(self.server, self.client)
        if moved:
            return True
        ends = ((self.client, self.server), (self.server, self.client))
        for closing, other in ends:
            if closing.aborted:
                self._close(closing, other)
                return True
        for end, other in ends:
            if end.writing and not end.outgoing:
                if end.drained():
                    self._close(end, other)
                return True
        return False

    def _close(self, closing: MemoryTransport, other: MemoryTransport) -> None:
        self.closed = True
        other.outgoing.clear()
        if closing.aborted:  # as Twisted's TCP transports report an abort to either side
            closing.lost(Failure(ConnectionAborted()))
            other.lost(Failure(ConnectionLost("connection reset by peer")))
        else:
            closing.lost(Failure(ConnectionDone("closed by this side")))
            other.lost(Failure(ConnectionDone("closed by peer")))


def _deliver(sender: MemoryTransport, receiver: MemoryTransport) -> bool:
    if not sender.outgoing or receiver.disconnected:
        return False
    if receiver.disconnecting:  # it no longer reads (Twisted stops reading at loseConnection): the bytes are dropped
        sender.outgoing.clear()
        return True
    if not receiver.reading:
        return False
    data = bytes(sender.outgoing[:SEGMENT])
    del sender.outgoing[:SEGMENT]
    receiver.protocol.dataReceived(data)
    return True


@dataclass(eq=False)
class ConnectionAttempt:
    """
    A client's connection attempt (``reactor.connectTCP``) as the network saw it, and what became of it:
    :attr:`outcome` is ``"pending"``, then ``"connected"`` (:attr:`connection` set), ``"refused"`` or ``"cancelled"``
    (the client gave up: ``connector.stopConnecting``).
    """

    host: str
    port: int
    factory: ClientFactory
    connector: IConnector
    source: IPv4Address | None
    outcome: str = PENDING
    connection: MemoryConnection | None = None


class Peer(Protocol):
    """
    A test's own end of a connection: it keeps what arrives (:attr:`received`) and how the connection ended
    (:attr:`reason`); the test writes, pauses and closes through its ``transport``.
    """

    transport: MemoryTransport | None  # (set by makeConnection: connected by the in-memory network)

    def __init__(self) -> None:
        self.received = bytearray()
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason

    @property
    def closed(self) -> bool:
        return self.reason is not None


class MemoryNetwork:
    """
    Listeners and connections on one ``MemoryReactorClock`` (made here unless given).

    :attr:`mode` decides what happens to a connection attempt to ``(host, port)``: ``"accept"`` (when something
    listens there; otherwise it is refused), ``"refuse"`` or ``"hang"`` (left pending: only a timeout ends it, or
    the test, with :meth:`accept` or :meth:`refuse`).
    """

    def __init__(self, reactor: MemoryReactorClock | None = None) -> None:
        self.reactor = reactor if reactor is not None else MemoryReactorClock()
        self.listeners: dict[tuple[str, int], IProtocolFactory] = {}
        self.connections: list[MemoryConnection] = []
        self.modes: dict[tuple[str, int], str] = {}
        #: Every connection attempt the network has seen (at its last flush or :meth:`attempts_to`), in order.
        self.attempts: list[ConnectionAttempt] = []
        self._pending: list[ConnectionAttempt] = []
        self._ports = itertools.count(40000)

    def listen(self, host: str, port: int, factory: IProtocolFactory) -> IPv4Address:
        """
        Serve ``factory``'s protocols at ``host:port``.
        """
        self.listeners[(host, port)] = factory
        factory.doStart()
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

    def attempts_to(self, host: str, port: int) -> list[ConnectionAttempt]:
        """
        The connection attempts to ``host:port`` so far, in order.
        """
        self._record_attempts()
        return [attempt for attempt in self.attempts if (attempt.host, attempt.port) == (host, port)]

    def accept(self, attempt: ConnectionAttempt, factory: IProtocolFactory) -> MemoryConnection:
        """
        Complete the pending ``attempt``: connect it to a protocol of ``factory``, the server, at once.
        """
        self._check_pending(attempt)
        connection = self._connect(attempt, factory)
        if connection is None:
            raise ValueError(f"{factory!r} built no protocol: the connection was refused")
        return connection

    def refuse(self, attempt: ConnectionAttempt) -> None:
        """
        Refuse the pending ``attempt`` (``ConnectionRefusedError``).
        """
        self._check_pending(attempt)
        attempt.outcome = REFUSED
        reason = Failure(ConnectionRefusedError(f"{attempt.host}:{attempt.port}"))
        attempt.factory.clientConnectionFailed(attempt.connector, reason)

    def _check_pending(self, attempt: ConnectionAttempt) -> None:
        if attempt.outcome == PENDING and _gave_up(attempt.connector):
            attempt.outcome = CANCELLED
        if attempt.outcome != PENDING:
            raise ValueError(f"the connection attempt to {attempt.host}:{attempt.port} is {attempt.outcome}")

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

    def _record_attempts(self) -> None:
        reactor = self.reactor
        for (host, port, factory, _timeout, bind), connector in zip(
            reactor.tcpClients, reactor.connectors, strict=False
        ):
            source = IPv4Address("TCP", str(bind[0]), int(bind[1]) or next(self._ports)) if bind else None
            attempt = ConnectionAttempt(host, port, factory, connector, source)
            self.attempts.append(attempt)
            self._pending.append(attempt)
        reactor.tcpClients.clear()
        reactor.connectors.clear()

    def _complete_attempts(self) -> bool:
        self._record_attempts()
        moved = False
        pending, self._pending = self._pending, []
        for attempt in pending:
            if attempt.outcome != PENDING:  # (completed by the test)
                continue
            if _gave_up(attempt.connector):
                attempt.outcome = CANCELLED
                continue
            mode = self.modes.get((attempt.host, attempt.port), ACCEPT)
            if mode == HANG:
                self._pending.append(attempt)
                continue
            moved = True
            server_factory = self.listeners.get((attempt.host, attempt.port))
            if mode == REFUSE or server_factory is None:
                self.refuse(attempt)
            else:
                self._connect(attempt, server_factory)
        return moved

    def _connect(self, attempt: ConnectionAttempt, server_factory: IProtocolFactory) -> MemoryConnection | None:
        server_address = IPv4Address("TCP", attempt.host, attempt.port)
        client_address = attempt.source or IPv4Address("TCP", "127.0.0.1", next(self._ports))
        server = server_factory.buildProtocol(client_address)
        if server is None:  # the server refused the connection (closed it unread)
            attempt.outcome = REFUSED
            reason = Failure(ConnectionRefusedError("closed at accept"))
            attempt.factory.clientConnectionFailed(attempt.connector, reason)
            return None
        client = attempt.factory.buildProtocol(server_address)
        assert client is not None, f"{attempt.factory!r} built no client protocol"
        server_end = MemoryTransport(server, server_address, client_address)
        client_end = MemoryTransport(client, client_address, server_address)
        connection = MemoryConnection(client_end, server_end)
        attempt.outcome, attempt.connection = CONNECTED, connection
        self.connections.append(connection)
        server.makeConnection(server_end)
        client.makeConnection(client_end)
        return connection
