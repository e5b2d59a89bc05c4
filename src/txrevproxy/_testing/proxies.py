"""
The proxies behind :mod:`txrevproxy.testing`: :class:`MemoryProxy` and :class:`MemoryClient` wired in memory on
a ``MemoryReactorClock``, and :class:`LiveProxy` listening on 127.0.0.1 in a running reactor (:func:`listen_proxy`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from io import BytesIO
from typing import TypedDict, cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol, ServerFactory, connectionDone
from twisted.internet.task import Cooperator, deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from twisted.web.resource import IResource
from twisted.web.server import Site
from zope.interface import implementer

from txrevproxy._http.networks import AccessPolicy
from txrevproxy._net.reactor import IProxyReactor
from txrevproxy._relay.exchange import ProxyConfig
from txrevproxy._server.config import ClientConfig
from txrevproxy._testing.memory import MemoryNetwork, Peer
from txrevproxy._testing.recording import RecordingOriginSite, RecordingProxySite, SeenRequest
from txrevproxy._upstream.pool import UpstreamPool
from txrevproxy.resource import PassThroughProxyResource


class ProxySettings(TypedDict, total=False):
    """
    A test proxy's settings besides its upstream: :func:`listen_proxy`'s keyword arguments, which ``start_proxy``
    and the pytest fixtures pass on.
    """

    #: The relay's settings (timeouts, pool, forwarding headers).
    config: ProxyConfig | None
    #: The client-side limits and deadlines.
    client: ClientConfig | None
    #: The access policy of the proxy resource.
    access: AccessPolicy | None


def _proxy_site(
    upstream: str,
    reactor: IProxyReactor,
    config: ProxyConfig | None,
    client: ClientConfig | None,
    access: AccessPolicy | None,
) -> RecordingProxySite:
    resource = PassThroughProxyResource.from_url(upstream, reactor, config=config, access=access)
    return RecordingProxySite(resource, reactor=reactor, client=client)


class _ProxyRecords:
    """
    What a proxy and its fake origin saw; shared by the in-memory and the listening proxies.
    """

    site: RecordingProxySite
    origin_site: RecordingOriginSite | None

    @property
    def requests(self) -> list[SeenRequest]:
        """
        The requests that reached the proxy's resource (in arrival order), with the status answered.
        """
        return list(self.site.seen)

    @property
    def origin_requests(self) -> list[SeenRequest]:
        """
        The requests the fake origin received (with their bodies); empty without a fake origin.
        """
        return list(self.origin_site.seen) if self.origin_site is not None else []

    @property
    def upstream_connections(self) -> int:
        """
        The connections the proxy opened to its upstream.
        """
        return self.site.resource.pool.connected


# -- in memory -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryResponse:
    """
    A whole response received through a :class:`MemoryProxy`.
    """

    code: int
    phrase: bytes
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        """
        The last value of header ``name``, or ``None``.
        """
        values = self.headers.getRawHeaders(name)
        return values[-1] if values else None


class _BodyCollector(Protocol):
    """
    A response body, whole: ``done`` fires with it, or fails with the reason the body did not complete (like
    ``readBody``, which warns about the proxying transport ``Agent`` gives its body protocols).
    """

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


class MemoryClient:
    """
    A raw client connection to a :class:`MemoryProxy`: for requests an HTTP client library would not send.
    """

    def __init__(self, proxy: MemoryProxy) -> None:
        self.proxy = proxy
        self.protocol: Peer | None = None

    @property
    def data(self) -> bytes:
        return self.received()

    @property
    def closed(self) -> bool:
        """
        Whether the connection has ended.
        """
        return self.protocol is not None and self.protocol.closed

    def send(self, data: bytes) -> None:
        """
        Send ``data`` and let the network carry it and everything it causes.
        """
        assert self.protocol is not None and self.protocol.transport is not None, "not connected"
        self.protocol.transport.write(data)
        self.proxy.flush()

    def received(self) -> bytes:
        """
        Everything received so far.
        """
        return bytes(self.protocol.received) if self.protocol is not None else b""

    def pause(self) -> None:
        """
        Stop reading, like a slow client: what the proxy sends waits in the network (and backpressure follows).
        """
        assert self.protocol is not None and self.protocol.transport is not None, "not connected"
        self.protocol.transport.pauseProducing()
        self.proxy.flush()

    def resume(self) -> None:
        """
        Read again.
        """
        assert self.protocol is not None and self.protocol.transport is not None, "not connected"
        self.protocol.transport.resumeProducing()
        self.proxy.flush()

    def close(self) -> None:
        assert self.protocol is not None and self.protocol.transport is not None, "not connected"
        self.protocol.transport.loseConnection()
        self.proxy.flush()


@implementer(IAgentEndpointFactory)
class _ToProxy:
    def __init__(self, proxy: MemoryProxy) -> None:
        self.proxy = proxy

    def endpointForURI(self, uri: URI) -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(self.proxy.clock, self.proxy.HOST, self.proxy.PORT)


class MemoryProxy(_ProxyRecords):
    """
    A proxy (``ProxySite`` + ``PassThroughProxyResource``, as the daemon serves) in front of ``origin``, a
    ``twisted.web`` resource served by a plain ``Site``, all connected in memory on :attr:`clock`.

    Bytes move only in :meth:`flush` (which the methods here call) and time passes only in :meth:`advance`, so a
    test sees every state in between: send a request, ``assertNoResult`` while the origin is slow, ``advance`` past
    a timeout, look at the answer.

    :param origin: the fake origin's resource; ``None`` for no origin (connections to it are refused).
    :param config: the relay's settings (timeouts, pool, forwarding headers).
    :param client: the client-side limits and deadlines.
    :param access: the access policy of the proxy resource.
    :param clock: the ``MemoryReactorClock`` to use (a new one when ``None``).
    """

    #: Where the proxy listens in memory.
    HOST, PORT = "127.0.0.1", 8080
    #: Where the fake origin listens in memory.
    ORIGIN_HOST, ORIGIN_PORT = "127.0.0.1", 8000

    def __init__(
        self,
        origin: IResource | None = None,
        *,
        config: ProxyConfig | None = None,
        client: ClientConfig | None = None,
        access: AccessPolicy | None = None,
        clock: MemoryReactorClock | None = None,
    ) -> None:
        self.network = MemoryNetwork(clock)
        self.clock = self.network.reactor
        self.origin_site = None
        if origin is not None:
            self.origin_site = RecordingOriginSite(origin, reactor=self.clock)
            self.network.listen(self.ORIGIN_HOST, self.ORIGIN_PORT, self.origin_site)
        upstream = f"http://{self.ORIGIN_HOST}:{self.ORIGIN_PORT}"
        # A MemoryReactorClock provides each interface of IProxyReactor the proxy uses (without declaring it).
        self.site = _proxy_site(upstream, cast(IProxyReactor, self.clock), config, client, access)
        self.network.listen(self.HOST, self.PORT, self.site)
        self.agent = Agent.usingEndpointFactory(
            self.clock, _ToProxy(self), pool=HTTPConnectionPool(self.clock, persistent=False)
        )

    @property
    def url(self) -> str:
        return f"http://{self.HOST}:{self.PORT}"

    def flush(self) -> None:
        """
        Let everything happen that can without time passing.
        """
        self.network.flush()

    def advance(self, seconds: float) -> None:
        """
        Let ``seconds`` pass on :attr:`clock`, and what follows happen.
        """
        self.network.advance(seconds)

    def origin_connections(self, mode: str) -> None:
        """
        What new connections to the origin get from now on: ``"accept"``, ``"refuse"`` or ``"hang"`` (never
        accepted: the proxy's connect timeout ends them).
        """
        self.network.set_mode(self.ORIGIN_HOST, self.ORIGIN_PORT, mode)

    def request(
        self,
        method: bytes | str,
        path: str = "/",
        headers: dict[str, str | Iterable[str]] | None = None,
        body: bytes | None = None,
    ) -> Deferred[MemoryResponse]:
        """
        Send a request through the proxy with Twisted's ``Agent`` (``Connection: close``); the ``Deferred`` fires
        with the whole :class:`MemoryResponse` once it has arrived, or fails as ``Agent`` does (e.g. a response the
        proxy cut short fails with ``ResponseFailed``). Read it with ``successResultOf`` / ``failureResultOf``.
        """
        if isinstance(method, str):
            method = method.encode("ascii")
        raw = Headers()
        for name, value in (headers or {}).items():
            raw.setRawHeaders(name, [value] if isinstance(value, str) else list(value))
        producer = None
        if body is not None:
            # Body steps scheduled on the clock, at the current instant: they run in flush().
            cooperator = Cooperator(scheduler=lambda step: self.clock.callLater(0, step))
            producer = FileBodyProducer(BytesIO(body), cooperator=cooperator)
        requested: Deferred[IResponse] = self.agent.request(method, (self.url + path).encode("ascii"), raw, producer)
        d = requested.addCallback(self._whole)
        self.flush()
        return d

    @staticmethod
    def _whole(response: IResponse) -> Deferred[MemoryResponse]:
        collector = _BodyCollector()
        response.deliverBody(collector)

        def whole(body: bytes) -> MemoryResponse:
            return MemoryResponse(response.code, response.phrase, response.headers, body)

        result: Deferred[MemoryResponse] = collector.done.addCallback(whole)
        return result

    def connect(self) -> MemoryClient:
        """
        A raw client connection to the proxy.
        """
        client = MemoryClient(self)
        d = TCP4ClientEndpoint(self.clock, self.HOST, self.PORT).connect(Factory.forProtocol(Peer))
        d.addCallback(lambda protocol: setattr(client, "protocol", protocol))
        self.flush()
        return client


# -- listening -----------------------------------------------------------------------------------------------


class LiveProxy(_ProxyRecords):
    """
    A proxy listening on a real socket in a running reactor (see :func:`listen_proxy`). Use it from the reactor's
    thread only.

    :ivar url: ``http://127.0.0.1:PORT``, the proxy.
    :ivar origin_url: the fake origin's URL when there is one (else ``None``).
    """

    def __init__(
        self, reactor: IProxyReactor, site: RecordingProxySite, origin_site: RecordingOriginSite | None
    ) -> None:
        self.reactor = reactor
        self.site = site
        self.origin_site = origin_site
        self.ports: list[IListeningPort] = []
        self.url = ""
        self.port = 0
        self.origin_url: str | None = None
        self.stopped = False

    def stop(self) -> Deferred[None]:
        """
        Stop listening, close every connection (client, upstream and origin) and fire once all are closed.
        """
        if self.stopped:
            return succeed(None)
        self.stopped = True
        pool = self.site.resource.pool
        pool.close()
        stopping = gatherResults([maybeDeferred(port.stopListening) for port in self.ports])
        sites = [site for site in (self.site, self.origin_site) if site is not None]
        for site in sites:
            site.abort_all()
        return stopping.addCallback(lambda _: self._closed(sites, pool, 0))

    def _closed(
        self, sites: list[RecordingOriginSite | RecordingProxySite], pool: UpstreamPool, waited: int
    ) -> Deferred[None] | None:
        # An abort completes on the reactor's next turns; upstream connections close when their relays notice.
        busy = any(site.open_channels() for site in sites) or pool.open > 0
        if not busy or waited >= 500:
            return None
        for site in sites:
            site.abort_all()
        return deferLater(self.reactor, 0.01, self._closed, sites, pool, waited + 1).addCallback(lambda _: None)


def _listen_locally(reactor: IProxyReactor, site: Site) -> IListeningPort:
    # (listenTCP's factory is typed a ServerFactory of Twisted's default protocol type, which a Site, a ServerFactory
    # of its own HTTP channel wrapper, is not: the type is invariant in it)
    return reactor.listenTCP(0, cast(ServerFactory, site), interface="127.0.0.1")


def _port_number(port: IListeningPort) -> int:
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    return address.port


def listen_proxy(
    reactor: IProxyReactor,
    *,
    upstream: str | None = None,
    origin: IResource | None = None,
    config: ProxyConfig | None = None,
    client: ClientConfig | None = None,
    access: AccessPolicy | None = None,
) -> LiveProxy:
    """
    A proxy listening on 127.0.0.1 (a free port) in ``reactor``, in front of the ``upstream`` URL or of ``origin``, a
    ``twisted.web`` resource served as a fake origin on 127.0.0.1 (exactly one of the two). It is listening when
    this returns; stop it with :meth:`LiveProxy.stop` (e.g. ``self.addCleanup(proxy.stop)`` in trial).
    """
    if (upstream is None) == (origin is None):
        raise TypeError("listen_proxy needs exactly one of upstream= (a URL) and origin= (a resource)")
    origin_site = None
    ports: list[IListeningPort] = []
    if origin is not None:
        origin_site = RecordingOriginSite(origin, reactor=reactor)
        ports.append(_listen_locally(reactor, origin_site))
        upstream = f"http://127.0.0.1:{_port_number(ports[0])}"
    assert upstream is not None
    site = _proxy_site(upstream, reactor, config, client, access)
    proxy = LiveProxy(reactor, site, origin_site)
    proxy.ports = ports
    if origin_site is not None:
        proxy.origin_url = upstream
    try:
        ports.append(_listen_locally(reactor, site))
    except BaseException:
        for port in ports:
            port.stopListening()
        raise
    proxy.port = _port_number(ports[-1])
    proxy.url = f"http://127.0.0.1:{proxy.port}"
    return proxy
