"""
The proxy in memory for unit tests, on the in-memory network ``txrevproxy.testing`` runs on
(``txrevproxy._testing.memory``): a real ``ProxySite`` (or a plain ``Site``) listening on it, a client connection
to it from ``peer``, and the proxy's connection attempts to its upstream held until the test accepts one (and then
plays the upstream server at the other end) or refuses it. Every action lets the network carry what follows;
time passes only in :meth:`Harness.advance`.

Also here, for the tests' assertions and not part of the network: :func:`head_and_body`, :func:`header_lines` and
:class:`CapturedLog`.
"""

from __future__ import annotations

from twisted.internet.interfaces import IConnector
from twisted.internet.protocol import ClientFactory, Factory
from twisted.web.server import Site

from txrevproxy import PassThroughProxyResource, ProxyConfig, ProxySite
from txrevproxy._server.config import ClientConfig
from txrevproxy._testing.memory import HANG, ConnectionAttempt, MemoryNetwork, MemoryTransport, Peer

#: Where the proxy listens, and where the default resource (and the tests' own) send requests.
LISTEN = ("127.0.0.1", 8080)
ORIGIN = ("127.0.0.1", 8000)


class Client:
    """
    A client connection to the proxy: :attr:`peer` is the test's end, :attr:`transport` the proxy's (what the proxy
    paused, closed or aborted) and :attr:`channel` the proxy's protocol on it.
    """

    def __init__(self, harness: Harness, host: str, port: int) -> None:
        self.harness = harness
        self.peer = Peer()
        connector = harness.reactor.connectTCP(
            *LISTEN, ClientFactory.forProtocol(lambda: self.peer), bindAddress=(host, port)
        )
        harness.flush()
        [attempt] = [attempt for attempt in harness.network.attempts if attempt.connector is connector]
        assert attempt.connection is not None, f"the proxy refused the connection ({attempt.outcome})"
        self.transport: MemoryTransport = attempt.connection.server
        self.channel = self.transport.protocol

    def send(self, data: bytes) -> None:
        self.peer.transport.write(data)  # type: ignore[union-attr]
        self.harness.flush()

    def response(self) -> bytes:
        """
        Every byte the proxy sent this client so far.
        """
        return bytes(self.peer.received)

    def close(self) -> None:
        self.peer.transport.loseConnection()  # type: ignore[union-attr]
        self.harness.flush()

    def stop_reading(self) -> None:
        """
        Read nothing more, like a slow client: what the proxy sends waits in the network.
        """
        self.peer.transport.pauseProducing()  # type: ignore[union-attr]
        self.harness.flush()

    def resume_reading(self) -> None:
        self.peer.transport.resumeProducing()  # type: ignore[union-attr]
        self.harness.flush()


class Upstream:
    """
    One connection attempt of the proxy to its upstream, pending until the test accepts or refuses it. Once
    accepted, the test is the upstream server: :attr:`transport` is the proxy's end of the connection, what the
    proxy paused, closed or aborted, and :attr:`protocol` the proxy's protocol on it.
    """

    def __init__(self, harness: Harness, attempt: ConnectionAttempt) -> None:
        self.harness = harness
        self.attempt = attempt
        self.peer = Peer()

    @property
    def connector(self) -> IConnector:
        return self.attempt.connector

    def accept(self) -> Upstream:
        self.harness.network.accept(self.attempt, Factory.forProtocol(lambda: self.peer))
        self.harness.flush()
        return self

    def refuse(self) -> None:
        self.harness.network.refuse(self.attempt)
        self.harness.flush()

    @property
    def transport(self) -> MemoryTransport:
        assert self.attempt.connection is not None, "not accepted"
        return self.attempt.connection.client

    @property
    def protocol(self) -> object:
        return self.transport.protocol

    def received(self) -> bytes:
        """
        Every byte the proxy sent this upstream so far.
        """
        return bytes(self.peer.received)

    def respond(self, data: bytes) -> None:
        self.peer.transport.write(data)  # type: ignore[union-attr]
        self.harness.flush()

    def close(self, clean: bool = True) -> None:
        """
        Close the connection from the upstream's side: cleanly, or with a reset (the proxy sees ``ConnectionLost``).
        """
        if clean:
            self.peer.transport.loseConnection()  # type: ignore[union-attr]
        else:
            self.peer.transport.abortConnection()  # type: ignore[union-attr]
        self.harness.flush()

    def stop_reading(self) -> None:
        """
        Read nothing more, like a stalled upstream: what the proxy sends waits in the network.
        """
        self.peer.transport.pauseProducing()  # type: ignore[union-attr]
        self.harness.flush()

    def resume_reading(self) -> None:
        self.peer.transport.resumeProducing()  # type: ignore[union-attr]
        self.harness.flush()


class Harness:
    """
    A proxy site on an in-memory network, one client connected to it (from ``peer``), and its upstream at
    :data:`ORIGIN`, whose connection attempts wait for the test.

    :param resource: the site's resource, or a callable that makes it from the reactor; by default a
        ``PassThroughProxyResource`` to :data:`ORIGIN` with ``config``.
    """

    def __init__(
        self,
        config: ProxyConfig | None = None,
        resource: object = None,
        site_class: type[Site] = ProxySite,
        peer: str = "10.0.0.1",
        client: ClientConfig | None = None,
    ) -> None:
        self.network = MemoryNetwork()
        self.reactor = self.network.reactor
        if callable(resource):
            resource = resource(self.reactor)
        self.resource = resource or PassThroughProxyResource(*ORIGIN, b"", self.reactor, config=config or ProxyConfig())
        if client is not None:
            self.site = site_class(self.resource, reactor=self.reactor, client=client)  # type: ignore[call-arg]
        else:
            self.site = site_class(self.resource, reactor=self.reactor)  # type: ignore[call-arg]
        self.network.listen(*LISTEN, self.site)
        self.network.set_mode(*ORIGIN, HANG)
        self._upstreams: dict[ConnectionAttempt, Upstream] = {}
        self._peer = peer
        self.clients: list[Client] = []
        first = self.connect()
        #: The proxy's end of the first client connection, and its protocol.
        self.client = first.transport
        self.channel = first.channel

    def connect(self) -> Client:
        """
        Another client connection to the proxy, from the same peer address.
        """
        client = Client(self, self._peer, 50000 + len(self.clients))
        self.clients.append(client)
        return client

    def flush(self) -> None:
        self.network.flush()

    def advance(self, seconds: float) -> None:
        """
        Let ``seconds`` pass on the clock, and the network carry what follows.
        """
        self.network.advance(seconds)

    # The first client connection.

    def send(self, data: bytes) -> None:
        self.clients[0].send(data)

    def response(self) -> bytes:
        return self.clients[0].response()

    def client_closed(self) -> None:
        """
        The first client closes its connection.
        """
        self.clients[0].close()

    # The upstream.

    def upstream(self, index: int = -1) -> Upstream:
        """
        The proxy's ``index``-th connection attempt to :data:`ORIGIN` (by default its latest).
        """
        attempt = self.network.attempts_to(*ORIGIN)[index]
        if attempt not in self._upstreams:
            self._upstreams[attempt] = Upstream(self, attempt)
        return self._upstreams[attempt]

    @property
    def attempts(self) -> int:
        return len(self.network.attempts_to(*ORIGIN))


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
