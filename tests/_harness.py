"""
In-memory proxy harness for unit tests: a real ``ProxySite`` channel on a ``StringTransport`` client, upstream
connections made through a ``MemoryReactorClock`` and completed by hand onto ``StringTransport``s.
"""

from __future__ import annotations

from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.server import Site

from txrevproxy import PassThroughProxyResource, ProxyConfig, ProxySite
from txrevproxy._server.channel import ClientConfig


class Upstream:
    """
    One upstream connection attempt recorded by the memory reactor.
    """

    def __init__(self, harness: Harness, index: int) -> None:
        self.harness = harness
        self.host, self.port, self.factory, self.timeout, _ = harness.reactor.tcpClients[index]
        self.protocol = None
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", self.host, self.port))

    def accept(self) -> Upstream:
        self.protocol = self.factory.buildProtocol(IPv4Address("TCP", self.host, self.port))
        self.protocol.makeConnection(self.transport)
        return self

    def refuse(self) -> None:
        self.factory.clientConnectionFailed(None, Failure(ConnectionRefusedError("Connection refused")))

    def received(self) -> bytes:
        return self.transport.value()

    def respond(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def close(self, clean: bool = True) -> None:
        reason = ConnectionDone() if clean else ConnectionLost()
        self.protocol.connectionLost(Failure(reason))


class Harness:
    def __init__(
        self,
        config: ProxyConfig | None = None,
        resource: object = None,
        site_class: type[Site] = ProxySite,
        peer: str = "10.0.0.1",
        client: ClientConfig | None = None,
    ) -> None:
        self.reactor = MemoryReactorClock()
        if callable(resource):
            resource = resource(self.reactor)
        self.resource = resource or PassThroughProxyResource(
            "127.0.0.1", 8000, b"", self.reactor, config=config or ProxyConfig()
        )
        if client is not None:
            self.site = site_class(self.resource, reactor=self.reactor, client=client)
        else:
            self.site = site_class(self.resource, reactor=self.reactor)
        self.client = StringTransport(
            peerAddress=IPv4Address("TCP", peer, 50000), hostAddress=IPv4Address("TCP", "127.0.0.1", 8080)
        )
        self.channel = self.site.buildProtocol(None)
        self.channel.makeConnection(self.client)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def upstream(self, index: int = -1) -> Upstream:
        return Upstream(self, index)

    @property
    def attempts(self) -> int:
        return len(self.reactor.tcpClients)

    def response(self) -> bytes:
        return self.client.value()

    def client_closed(self) -> None:
        self.channel.connectionLost(Failure(ConnectionDone()))


def head_and_body(response: bytes) -> tuple[bytes, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head, body


def header_lines(head: bytes) -> list[bytes]:
    return head.split(b"\r\n")[1:]


class CapturedLog:
    """
    The text of every event logged through ``twisted.logger`` while it is installed (a context manager).
    """

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __enter__(self) -> CapturedLog:
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(self.events.append)
        return self

    def __exit__(self, *exc_info: object) -> None:
        from twisted.logger import globalLogPublisher

        globalLogPublisher.removeObserver(self.events.append)

    def lines(self) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(event) for event in self.events]

    def text(self) -> str:
        return "\n".join(self.lines())


class _NoSelect:
    """
    The part of a reactor a ``FileDescriptor`` uses: nothing is ever selected, the test drives ``doWrite``.
    """

    def addReader(self, reader: object) -> None:
        pass

    def removeReader(self, reader: object) -> None:
        pass

    def addWriter(self, writer: object) -> None:
        pass

    def removeWriter(self, writer: object) -> None:
        pass


class SocketlessTransport(FileDescriptor):
    """
    Twisted's own ``FileDescriptor`` write buffer and producer logic (which ``StringTransport`` does not model: a
    paused producer holds a ``loseConnection`` open) over a "socket" that takes only :attr:`room` more bytes.
    :meth:`drain` is the reactor finding it writable; it returns what ``doWrite`` returned (``CONNECTION_DONE``
    once the connection may close).
    """

    def __init__(self, peer: str = "10.0.0.1") -> None:
        super().__init__(_NoSelect())
        self.connected = 1
        self.room = 0
        self.sent = bytearray()
        self.peer = IPv4Address("TCP", peer, 50000)

    def writeSomeData(self, data: bytes) -> int:
        taken = bytes(data[: self.room])
        self.sent += taken
        self.room -= len(taken)
        return len(taken)

    def drain(self) -> object:
        self.room = 1 << 62
        return self.doWrite()

    @property
    def buffered(self) -> int:
        """
        Bytes written and not yet taken by the "socket".
        """
        return len(self.dataBuffer) - self.offset + self._tempDataLen

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()

    def getPeer(self) -> IPv4Address:
        return self.peer

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 8080)
